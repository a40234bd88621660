"""FID of the study's models: computed only from local standard Inception weights, never invented.

The standard FID network is Inception-v3 with the TF 2015-12-05 weights (pt_inception-2015-12-05,
what pytorch-fid and torchmetrics' `feature_extractor_weights_path` load). Nothing here downloads
them, and a randomly initialised Inception would give a number with no meaning, so without a local
copy (`ddpm.fid.inception_weights`) the tables say FID was not computed and why.

This version measures windows of a few hundred steps, whose EMA samples would not be worth an FID
either; `status` therefore reports, for every case, why no FID is in the table.
"""

from __future__ import annotations

from pathlib import Path


def status(inception_weights: str | None) -> str:
    if not inception_weights:
        return ("not computed: ddpm.fid.inception_weights is not set (FID needs a local copy of the standard "
                "Inception weights; a random-network FID would mean nothing)")
    if not Path(inception_weights).is_file():
        return f"not computed: {inception_weights} (ddpm.fid.inception_weights) does not exist"
    return ("not computed: the study's windows train a few hundred steps, too few for EMA samples worth an FID "
            f"(weights found at {inception_weights})")
