"""The standard development split of the SIXray folder (``../shared/data/sixray``).

Deterministic, by bag id, so every helper and every run uses the same bags:

* **benign** (N0000001-N0000300, sorted): ``train`` = N0000001-N0000180 (180 bags,
  the only benign bags any model may be trained on), ``val`` = N0000181-N0000240
  (60 bags: pool (a) for choosing settings, and held-out calibration), ``test`` =
  N0000241-N0000300 (60 bags: pool (a) of reported figures). Contiguous blocks:
  scan size and content do not drift with the id (medians checked per block of 30).
* **threat** (the 77 bags of ``threat/images``): ``val`` for choosing settings,
  ``test`` reported once. Bags are stratified by annotation (gun only, knife only,
  gun and knife, mask only) and, within each stratum in sorted id order, alternate
  val, test, val, test... so both halves hold the same mix. The strata come from
  fixed, frozen lists below (computed once from the folder's labels), so the split
  does not move if label files are edited.

Never train on any threat bag or on benign val/test bags.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENIGN_TRAIN = tuple(f"N{i:07d}" for i in range(1, 181))
BENIGN_VAL = tuple(f"N{i:07d}" for i in range(181, 241))
BENIGN_TEST = tuple(f"N{i:07d}" for i in range(241, 301))

# Threat bags of sixray/threat/images by annotation stratum (frozen; see module doc).
# No bag has a gun box without a knife box.
_GUN_ONLY = ()
_KNIFE_ONLY = (
    "P00001",
    "P00002",
    "P00004",
    "P00016",
    "P00020",
    "P00066",
    "P00209",
    "P00222",
    "P00238",
    "P00239",
    "P00242",
    "P00247",
    "P00254",
    "P00276",
    "P00289",
    "P00311",
    "P00318",
)
_GUN_AND_KNIFE = (
    "P00017",
    "P00039",
    "P00049",
    "P00050",
    "P00064",
    "P00069",
    "P00087",
    "P00091",
    "P00099",
    "P00102",
    "P00103",
    "P00105",
    "P00114",
    "P00120",
    "P00124",
    "P00130",
    "P00140",
    "P00147",
    "P00152",
    "P00154",
    "P00159",
    "P00162",
    "P00166",
    "P00170",
    "P00178",
    "P00187",
    "P00194",
    "P00200",
    "P00202",
    "P00218",
    "P00221",
    "P00228",
    "P00229",
    "P00230",
    "P00287",
    "P00297",
    "P00310",
    "P00340",
    "P00351",
    "P00353",
    "P00356",
    "P00358",
    "P00364",
    "P00387",
    "P00391",
    "P00394",
    "P00412",
)
_MASK_ONLY = (
    "P00031",
    "P00060",
    "P00061",
    "P00128",
    "P00138",
    "P00143",
    "P00167",
    "P00177",
    "P00182",
    "P00211",
    "P00307",
    "P00395",
    "P00417",
)


def _alternate(strata: Sequence[Sequence[str]], parity: int) -> tuple[str, ...]:
    out: list[str] = []
    for stratum in strata:
        out += [b for i, b in enumerate(sorted(stratum)) if i % 2 == parity]
    return tuple(sorted(out))


_STRATA = (_GUN_ONLY, _KNIFE_ONLY, _GUN_AND_KNIFE, _MASK_ONLY)
THREAT_VAL = _alternate(_STRATA, 0)
THREAT_TEST = _alternate(_STRATA, 1)

SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {"benign": BENIGN_TRAIN, "threat": ()},
    "val": {"benign": BENIGN_VAL, "threat": THREAT_VAL},
    "test": {"benign": BENIGN_TEST, "threat": THREAT_TEST},
    "dev": {"benign": BENIGN_VAL + BENIGN_TEST, "threat": THREAT_VAL + THREAT_TEST},
}


def select(paths: Sequence[Path], names: Sequence[str]) -> list[Path]:
    """The files among ``paths`` whose stem is in ``names`` (order of ``paths``)."""
    wanted = set(names)
    return [p for p in paths if Path(p).stem in wanted]


def benign_train_files(normal_dir: str | Path) -> list[Path]:
    """The benign training bags (the only ones a model may be fitted on) in ``normal_dir``."""
    d = Path(normal_dir)
    return [d / f"{n}.jpg" for n in BENIGN_TRAIN if (d / f"{n}.jpg").is_file()]


def sixray_files(data_dir: str | Path, split: str) -> tuple[list[Path], list[Path]]:
    """``(benign, threat)`` scan files of ``split`` in a SIXray folder laid out like
    ``../shared/data/sixray`` (``normal/``, ``threat/images/``)."""
    d = Path(data_dir)
    chosen = SPLITS[split]
    benign = [d / "normal" / f"{n}.jpg" for n in chosen["benign"]]
    threat = [d / "threat" / "images" / f"{n}.jpg" for n in chosen["threat"]]
    return [p for p in benign if p.is_file()], [p for p in threat if p.is_file()]


def sixray_dataset(
    data_dir: str | Path,
    split: str = "val",
    *,
    masks: bool = True,
    settings: Any = None,
    progress: bool = False,
) -> Any:
    """The prepared protocol dataset of a SIXray split, ready for
    :func:`xrayscreen.evaluation.runner.evaluate` (research helpers: prepare once,
    evaluate many scorers)::

        ds = sixray_dataset("../shared/data/sixray", "val")
        ev = evaluate(ds, [FloorScorer(), ModelScorer(bundle, ["latent", "residual"])])

    Args:
        data_dir: The ``sixray`` folder.
        split: ``"val"``, ``"test"``, ``"dev"`` (both) or ``"train"`` (benign only).
        masks: Also use the pixel masks (windows of mask-only bags, pixel AUROC).
        settings: :class:`~xrayscreen.evaluation.dataset.ProtocolSettings` (default: product).
        progress: tqdm bar.
    """
    from xrayscreen.evaluation.annotations import AnnotationSource
    from xrayscreen.evaluation.dataset import ProtocolSettings, prepare_dataset

    d = Path(data_dir)
    benign, threat = sixray_files(d, split)
    source = AnnotationSource(
        labels=d / "threat" / "labels_yolo", masks=(d / "threat" / "masks") if masks else None
    )
    return prepare_dataset(
        benign, threat, source, settings or ProtocolSettings(), progress=progress
    )
