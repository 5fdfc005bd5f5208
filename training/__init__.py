"""Training module (installed as ``xrayscreen.training``)."""
