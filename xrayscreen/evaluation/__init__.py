"""The X-ray benchmark protocol (`xrayscreen evaluate`): labels, floors, metrics, reports."""
