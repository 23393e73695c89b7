"""SDK: the map of mask proposals: clusters of their embeddings and a FiftyOne Brain visualization.

Example::

    samtext.compute_mask_proposals(dataset, out_field="proposals")
    info = samtext.compute_proposal_map(dataset, field="proposals")   # brain key "proposals_map"
    session = fo.launch_app(dataset)  # Embeddings panel: brain key "proposals_map", colour by "cluster"

Each proposal gets a ``cluster`` attribute (k-means of its embedding); the Brain visualization holds a 2-D
UMAP point per proposal, so the App's Embeddings panel shows the proposals as a map that can be lassoed. Both
are fit on at most ``fit_cap`` proposals and applied to all, so that the map stays quick to make at 100k
images.
"""

from dataclasses import dataclass

from ..names import MAP_SUFFIX
from ..pipelines.clusters import cluster_embeddings, map_2d
from ..run import driver
from ..run import fields as sds
from ..run import records
from ..settings import MapSettings, signature_with
from .mask_proposals import DEFAULT_FIELD, proposal_embeddings
from ..errors import SamtextError

RESERVED_ATTRIBUTES = {"id", "_id", "label", "bounding_box", "mask", "mask_path", "confidence", "index", "tags",
                       "attributes", "predicted_iou", "stability_score", "area"}


@dataclass
class ProposalMap:
    """What :func:`compute_proposal_map` made: the brain key, the number of clusters and of proposals mapped."""

    brain_key: str
    num_clusters: int
    proposals: int
    cluster_attribute: str


def compute_proposal_map(
    samples,
    field: str = DEFAULT_FIELD,
    **kwargs,
) -> ProposalMap:
    """Clusters the proposals of ``samples`` in ``field`` and stores their map as a Brain visualization.

    Arguments:
        samples: a dataset or view whose samples hold proposals from :func:`samtext.compute_mask_proposals`.
        field: the proposals field.
        **kwargs: the map's settings (:class:`samtext.settings.MapSettings`): ``brain_key`` (default
            ``<field>_map``), ``num_clusters`` (k of k-means, or "auto": by silhouette score), ``cluster_attribute``,
            ``fit_cap`` (the most proposals the clusters and the UMAP are fit on; the rest are assigned and placed),
            ``seed``, ``overwrite`` (replace an existing brain run with that key).

    Raises:
        ValueError: the field holds no proposals with embeddings; the brain key is taken (without
            ``overwrite``) or not a valid name.
    """
    settings = MapSettings.from_kwargs(kwargs, "compute_proposal_map")
    brain_key, num_clusters, cluster_attribute = settings.brain_key, settings.num_clusters, settings.cluster_attribute
    fit_cap, seed, overwrite = settings.fit_cap, settings.seed, settings.overwrite
    dataset, samples = driver.sample_collection(samples)
    brain_key = brain_key or field + MAP_SUFFIX
    sds.check_field_name(brain_key, "brain_key")
    sds.check_field_name(cluster_attribute, "cluster_attribute")
    if cluster_attribute in RESERVED_ATTRIBUTES:
        raise SamtextError("cluster_attribute %r is a field the proposals already use; choose another name"
                         % cluster_attribute)
    if brain_key in dataset.list_brain_runs() and not overwrite:
        raise SamtextError("brain key %r is taken; pass overwrite=True to replace it, or choose another brain_key"
                         % brain_key)
    ids, vectors = proposal_embeddings(samples, field)
    if not ids:
        raise SamtextError("no proposal in field %r of these samples has an embedding" % field)
    # everything is computed before anything is written: a failure here leaves the dataset as it was
    clusters, k = cluster_embeddings(vectors, num_clusters, fit_cap, seed)
    points = map_2d(vectors, fit_cap, seed)  # one path at every size: UMAP fit on <= fit_cap, the rest placed
    _store_map(dataset, samples, field, ids, points, brain_key)
    # the new cluster ids replace every earlier fit's, so that no two fits mix
    sds.set_detection_attribute(dataset, field, cluster_attribute, dict(zip(ids, clusters.tolist())))
    sds.declare_attributes(dataset, [field])  # the Embeddings panel colours only by declared attributes
    result = ProposalMap(brain_key, int(k), len(ids), cluster_attribute)
    records.update_run(dataset, records.run_key_for(field), map=vars(result))
    return result


def _store_map(dataset, samples, field: str, ids, points, brain_key: str) -> None:
    """Saves ``(N, 2)`` ``points`` of the proposals ``ids`` (label ids of ``field``) as the Brain visualization
    ``brain_key``. An earlier run with that key stays until the new one is complete; a failed call removes
    what it registered, so that a retry finds the key as it was."""
    import fiftyone.brain as fob

    n_patches = samples.count(field + ".detections")
    mapped = samples if n_patches == len(ids) else samples.select_labels(ids=ids, fields=field)
    key = brain_key
    while key in dataset.list_brain_runs():
        key += "_new"
    try:
        fob.compute_visualization(mapped, patches_field=field, points=dict(zip(ids, points)),
                                  brain_key=key)
    except BaseException:
        if key in dataset.list_brain_runs():
            dataset.delete_brain_run(key)
        raise
    if key != brain_key:
        dataset.delete_brain_run(brain_key)
        dataset.rename_brain_run(key, brain_key)


signature_with(compute_proposal_map, MapSettings)
