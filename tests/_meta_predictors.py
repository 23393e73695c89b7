"""The comparison of a samtext segmenter with the answers of Meta's own image predictors (SAM 2.1's
``SAM2ImagePredictor``, SAM 3's ``predict_inst``), written by scripts/make_meta_sam2_fixture.py and
scripts/make_meta_sam3_fixture.py."""

import numpy as np
import torch


def assert_meta_predictor_answers(seg, image, points, box, answers, prefix="", atol=1e-4):
    """``seg`` (a samtext segmenter) gives the answers of Meta's image predictor (``answers[prefix + name]``:
    ``low_res_logits``, ``scores``) for the fixture scripts' prompts (``predictor_prompts``) on ``image``."""
    from make_meta_sam2_fixture import predictor_prompts

    emb = seg.embed(image)
    for name, meta in predictor_prompts(points, box).items():
        want = answers[prefix + name]
        prompt = dict(multimask=meta["multimask_output"])
        if "box" in meta:
            prompt["boxes"] = meta["box"][None]
        else:
            prompt.update(point_coords=meta["point_coords"][None], point_labels=meta["point_labels"][None])
        pred = seg.predict(emb, full_size=False, **prompt)
        got = pred.low_res_logits[0].clamp(-32, 32)  # Meta's predictors clamp their low-res logits to +-32
        assert got.shape == want["low_res_logits"].shape, name
        inside = want["low_res_logits"].abs() < 31.9
        assert inside.float().mean() > 0.2, name  # the comparison is not only of saturated pixels
        torch.testing.assert_close(got, want["low_res_logits"], atol=atol, rtol=1e-4, msg=name)
        np.testing.assert_allclose(pred.scores[0], want["scores"].numpy(), rtol=1e-4, atol=1e-9, err_msg=name)
