"""CLSA's settings (`clsa.py`), importable without TensorFlow (see `methods.settings`)."""

from myol_keras.methods.settings import MethodSetting


def _strong_size_is_single_crop(values):
    if values["method"] == "clsa" and values["clsa_crops"] == "multi" and values["clsa_strong_size"]:
        return (f"--clsa_strong_size={values['clsa_strong_size']} sets the single-crop strong view; "
                "--clsa_crops=multi scales its five sides from the training size (use --clsa_strong_size=0)")
    return None


SETTINGS = (
    MethodSetting("clsa_temperature", 0.2, "CLSA: temperature T of the contrastive term (0.2 in the CLSA code).",
                  methods=("clsa",), argument="temperature", above=0.0),
    MethodSetting("clsa_ddm_temperature", 0.2, "CLSA: temperature T2 of both distributions of the DDM term (0.2).",
                  methods=("clsa",), argument="ddm_temperature", above=0.0),
    MethodSetting("clsa_alpha", 1.0, "CLSA: weight alpha of the DDM term (1 in the CLSA code; 0 gives MoCo with its "
                  "in-batch negatives).", methods=("clsa",), argument="alpha", minimum=0.0),
    MethodSetting("clsa_form", "code", "CLSA: logits of the CLSA code (B x (B+K), the batch's other keys as extra "
                  "negatives) or of the paper (B x (1+K)).", methods=("clsa",), argument="form",
                  choices=("code", "paper")),
    MethodSetting("clsa_symmetric", False, "CLSA: the code's symmetric variant (--sym 1): the key view is also a weak "
                  "query, scored against the keys of the weak-query view.", methods=("clsa",), argument="symmetric"),
    MethodSetting("clsa_queue_size", 4096, "CLSA: queue length K (65536 on ImageNet in the CLSA code; 4096 as MoCo "
                  "here for data sets of ~50k images).", methods=("clsa",), argument="queue_size", minimum=1),
    MethodSetting("clsa_strong_size", 0, "CLSA single-crop: side of the strong view in px; 0: the code's 96/224 of "
                  "the training size, at least the backbone's minimum (32 px -> 14, 64 -> 27, 96 -> 41).",
                  methods=("clsa",), argument="strong_size", minimum=0),
    MethodSetting("clsa_crops", "single", "CLSA: single-crop (the code's run_single.sh: weak query, key, one strong "
                  "query) or multi-crop (run_multi.sh: the key and a weak and a strong query at each of the code's "
                  "224, 192, 160, 128, 96 px scaled to the training size, e.g. 32 px -> 32, 27, 23, 18, 14; "
                  "5 + 25 loss terms, summed).", methods=("clsa",), argument="crops", choices=("single", "multi")),
)

CROSS_RULES = ((("method", "clsa_crops", "clsa_strong_size"), _strong_size_is_single_crop),)
