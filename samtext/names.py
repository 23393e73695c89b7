"""The names samtext shares across its layers: default output fields, label tags, keys of runs, evaluations and
views. Change one here and every action, operator and check follows."""

# default output fields of the actions
REFERENCE_FIELD = "samtext_reference"
TEXT_FIELD = "samtext_text"
PROPOSALS_FIELD = "samtext_proposals"
EXAMPLES_FIELD = "samtext_examples"
PREDICTIONS_FIELD = "samtext_predictions"

# fields written beside an output field (``<field><suffix>``)
INSTANCES_SUFFIX = "_instances"
PROMPTS_SUFFIX = "_prompts"
APPROVED_SUFFIX = "_approved"  # the masks a person approved, which feed a rerun
MAP_SUFFIX = "_map"  # the brain key of a proposals field's map

# label tags
REJECT_TAG = "samtext:reject"  # what review puts on the labels it rejects; training and export leave them out
APPROVED_TAG = "approved"  # a label (or sample) a person checked: never rejected, fed to a rerun

# keys
RUN_KEY_PREFIX = "samtext_"  # a field's run record: samtext_<field>
TRAIN_RUN_KEY_PREFIX = "samtext_train_"  # a training run's record: samtext_train_<label field>
EVAL_KEY = "samtext_eval"
REVIEW_VIEW = "samtext_to_review"
