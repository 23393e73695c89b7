"""Form blocks shared by samtext's operators (models, output field, execution options)."""

import fiftyone as fo
import fiftyone.operators.types as types

from ._sdk import samtext

SAM_CHOICES = {
    "vit_b": "SAM ViT-B (375 MB, fastest)",
    "vit_l": "SAM ViT-L (1.2 GB)",
    "vit_h": "SAM ViT-H (2.5 GB, best)",
    "tiny": "Tiny random SAM (tests and offline demos; masks are meaningless)",
}


def choice_view(choices, view_cls=types.DropdownView):
    view = view_cls()
    for value, label in choices.items():
        view.add_choice(value, label=label)
    return view


def fields_of_types(ctx, *doc_types):
    """Names of the dataset's fields holding any of ``doc_types`` (e.g. ``fo.Segmentation``)."""
    if ctx.dataset is None:
        return []
    names = set()
    for doc_type in doc_types:
        names.update(ctx.dataset.get_field_schema(embedded_doc_type=doc_type).keys())
    return sorted(names)


def output_field(inputs, ctx, default, label_cls=fo.Segmentation):
    """An output field name (existing ``label_cls`` fields offered) and the overwrite switch. Marks the
    form invalid when the name exists with another type, so the run cannot start."""
    view = types.AutocompleteView()
    for name in fields_of_types(ctx, label_cls):
        view.add_choice(name, label=name)
    prop = inputs.str("out_field", default=default, required=True, label="Output field",
                      description="A new field, or an existing %s field" % label_cls.__name__, view=view)
    name = ctx.params.get("out_field") or default
    schema = ctx.dataset.get_field_schema() if ctx.dataset is not None else {}
    if name in schema and getattr(schema[name], "document_type", None) is not label_cls:
        prop.invalid = True
        prop.error_message = "Field %r exists with another type" % name
    inputs.bool("overwrite", default=False, label="Overwrite existing labels",
                description="Off: samples that already have the field are skipped (a rerun fills the gaps)")


def models(inputs, ctx, needs_clip):
    inputs.enum("sam_model", list(SAM_CHOICES), default="vit_b", label="SAM model",
                view=choice_view(SAM_CHOICES))
    if needs_clip:
        inputs.str("clip_model", default="ViT-B-32", label="CLIP model",
                   description="An open_clip model name, or 'tiny'")
        inputs.str("clip_pretrained", default="openai", label="CLIP weights",
                   description="An open_clip tag (e.g. openai, laion2b_s34b_b79k) or a weights file path")
    inputs.enum("device", ["auto", "cpu", "cuda"], default="auto", label="Device",
                view=choice_view({"auto": "auto", "cpu": "cpu", "cuda": "cuda"}, types.RadioGroup))
    inputs.enum("precision", ["auto", "fp32", "bf16"], default="auto", label="Precision",
                description="auto: bf16 where the hardware runs it fast",
                view=choice_view({"auto": "auto", "fp32": "fp32", "bf16": "bf16"}, types.RadioGroup))


def progress_label(done, total):
    return "%d / %d images" % (done, total)


def app_progress(ctx, events):
    """Runs an action's generator of ``(done, total)`` events for an immediate run, yielding the App's
    progress triggers; returns the generator's return value (the summary)."""
    while True:
        try:
            done, total = next(events)
        except StopIteration as stop:
            return stop.value
        yield ctx.trigger("set_progress", dict(progress=done / max(total, 1), label=progress_label(done, total)))


def delegated_progress(ctx, events):
    """Runs an action's generator for a delegated run, recording progress on the run; returns the summary."""
    return samtext.run_with_progress(
        events, lambda done, total: ctx.set_progress(progress=done / max(total, 1), label=progress_label(done, total))
    )
