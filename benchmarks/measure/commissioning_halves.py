"""Commissioning with and without re-estimated BatchNorm statistics: test/ split into two halves by patient.

Re-estimation reads a site's images, so it must not see the films it is scored on. For each of two
seeded patient halves of test/ ("this clinic" and "its later patients"): the run's Keras model is
re-estimated on the images of one half that the original model's input gate accepted (unlabelled),
re-exported and re-verified exactly as `edgecxr commission --renormalise` does
(convert/site_reexport.py), and the new artifact scores all of test/ once. Then, per size k and
seeded split, k labelled images (whole patients per class) are drawn from the re-estimation half
and commission the model with the site-threshold rule; the OTHER half is scored. The same draws
commission the original model, so "with" and "without" differ only in the re-estimation. The
halves then swap; the figures pool both (2 x splits values per cell).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgecxr.convert.site_reexport import rebuild_renormalised
from edgecxr.edge_runtime.metrics import binary_metrics
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.site_threshold import choose_site_threshold

from .site_draws import FIGURES, TARGET, draw_commissioning_part, score_test, summarise

VARIANTS = ("without", "with")


def patient_halves(patients: np.ndarray, seed: int) -> np.ndarray:
    """0 or 1 per image; every film of a patient in the same half (patients are "CLASS:ID" here,
    and one ID in both classes is still one patient)."""
    ids = np.array([p.split(":", 1)[1] for p in patients])
    unique = np.unique(ids)
    order = np.random.default_rng([seed, 2]).permutation(len(unique))
    half_of = {patient: int(rank >= len(unique) // 2) for patient, rank in zip(unique[order], range(len(unique)))}
    return np.array([half_of[i] for i in ids])


def aligned(base: dict, other: dict) -> tuple[np.ndarray, np.ndarray]:
    """Indices into `base` of the images both models accepted, and `other`'s probabilities for them."""
    position = {path: i for i, path in enumerate(other["paths"])}
    keep = np.array([i for i, path in enumerate(base["paths"]) if path in position], dtype=int)
    return keep, other["probabilities"][[position[base["paths"][i]] for i in keep]]


def split_figures(truths, probabilities, commission, evaluate, validated: float) -> dict:
    choice = choose_site_threshold(truths[commission], probabilities[commission], validated, TARGET)
    return {"site": binary_metrics(truths[evaluate], probabilities[evaluate], choice.threshold),
            "validated": binary_metrics(truths[evaluate], probabilities[evaluate], validated),
            "threshold": choice.threshold, "supported": choice.supported}


def run_halves(run: Path, model: Path, base: dict, test_dir: Path, args) -> dict:
    """The protocol above for one run and its model; `base` is the original model's scores of test/."""
    halves = patient_halves(base["patients"], args.seed)
    validated = Predictor.open(model).threshold
    collected = {(variant, k): [] for variant in VARIANTS for k in args.sizes}
    described = []
    for half in (0, 1):
        paths = [p for p, h in zip(base["paths"], halves) if h == half]
        with tempfile.TemporaryDirectory(prefix="edgecxr-halves-") as workdir:
            artifact, record = rebuild_renormalised(run, model, [Path(p) for p in paths], Path(workdir),
                                                    calibration_size=args.calibration_size,
                                                    verify_size=args.verify_size)
            renormalised = score_test(Predictor.open(artifact), test_dir)
        keep, probabilities = aligned(base, renormalised)
        truths, patients, in_half = base["truths"][keep], base["patients"][keep], halves[keep] == half
        variants = {"without": base["probabilities"][keep], "with": probabilities}
        described.append({"half": half, "re_estimation_images": len(paths),
                          "patients": int(len(np.unique(patients[in_half]))),
                          "scored_by_both": int(len(keep)), "refused_after": renormalised["refused"],
                          "renormalisation": record})
        for k in args.sizes:
            rng = np.random.default_rng([args.seed, k, half])
            for _ in range(args.splits):
                drawn = draw_commissioning_part(truths[in_half], patients[in_half], k, rng)
                commission = np.zeros(len(keep), dtype=bool)
                commission[np.flatnonzero(in_half)[drawn]] = True
                for variant, probs in variants.items():
                    collected[(variant, k)].append(
                        split_figures(truths, probs, commission, ~in_half, validated))
    rows = []
    for k in args.sizes:
        row = {"k": k, "splits": 2 * args.splits}
        for variant in VARIANTS:
            items = collected[(variant, k)]
            row[variant] = {
                "supported_share": float(np.mean([i["supported"] for i in items])),
                "site_threshold": summarise([i["threshold"] for i in items]),
                "commissioned": {f: summarise([i["site"][f] for i in items]) for f in FIGURES},
                "uncommissioned": {f: summarise([i["validated"][f] for i in items]) for f in FIGURES},
            }
        rows.append(row)
    return {"run": str(run), "halves": described, "validated_threshold": validated, "sizes": rows,
            "settings": {"calibration_size": args.calibration_size, "verify_size": args.verify_size,
                         "calibration": "disjoint seeded parts of the re-estimation half's images (no labels): up to "
                                        "half for verification, the rest for calibration",
                         "halves_seed": args.seed}}
