"""SuNCEt's settings (`suncet.py`), importable without TensorFlow (see `methods.settings`)."""

from myol_keras.methods.settings import MethodSetting


def _supervised_epochs_within_the_run(values):
    if values["method"] == "suncet" and values["supervised_epochs"] > values["epochs"]:
        return (f"--supervised_epochs={values['supervised_epochs']} is more than --epochs={values['epochs']}; "
                "use at most --epochs (0: every epoch)")
    return None


SETTINGS = (
    MethodSetting("labels_fraction", 0.1, "SuNCEt: labelled share of every class of the training split, chosen per "
                  "class with --seed (10% in the paper).", methods=("suncet",), argument="labels_fraction",
                  above=0.0, maximum=1.0),
    MethodSetting("supervised_epochs", 0, "SuNCEt: the supervised term is on for the first N epochs; 0: every epoch "
                  "(the official ImageNet config: 100 of 100).", methods=("suncet",), argument="supervised_epochs",
                  minimum=0),
    MethodSetting("suncet_classes_per_batch", 0, "SuNCEt: classes C in each labelled batch; 0: every class, at most "
                  "20 (the official ImageNet config).", methods=("suncet",), argument="classes_per_batch", minimum=0),
    MethodSetting("suncet_images_per_class", 2, "SuNCEt: labelled images s of each class in a batch (official: 2).",
                  methods=("suncet",), argument="images_per_class", minimum=1),
    MethodSetting("suncet_temperature", 0.1, "SuNCEt: temperature of the supervised term (0.1).",
                  methods=("suncet",), argument="suncet_temperature", above=0.0),
    MethodSetting("suncet_ntxent_temperature", 0.1, "SuNCEt: temperature of its NT-Xent term (0.1 in the official "
                  "code, one temperature for both terms; --method=simclr uses 0.07).", methods=("suncet",),
                  argument="temperature", above=0.0),
)

CROSS_RULES = ((("method", "supervised_epochs", "epochs"), _supervised_epochs_within_the_run),)
