"""Clusters and a 2-D map of embeddings, scaled for millions of vectors: both are fit on a capped random
sample and then applied to every vector. Nothing here imports FiftyOne; umap-learn is imported only when a map
is made (its first import takes tens of seconds).
"""

from typing import Tuple, Union

import numpy as np

from ..settings import MapSettings
from ..errors import SamtextError

AUTO_MAX_CLUSTERS = 24


def _fit_sample(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def cluster_embeddings(vectors: np.ndarray, num_clusters: Union[int, str] = MapSettings.num_clusters,
                       fit_cap: int = MapSettings.fit_cap, seed: int = MapSettings.seed) -> Tuple[np.ndarray, int]:
    """k-means clusters of ``(N, D)`` unit vectors: ``((N,) int cluster ids, k)``.

    ``num_clusters="auto"`` picks k in 2..24 by the silhouette score (cosine) on at most 3000 of the vectors;
    k is capped at the number of distinct vectors. The fit uses at most ``fit_cap`` vectors (mini-batch k-means
    beyond that), then every vector gets its nearest centre.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import silhouette_score

    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    distinct = len(np.unique(np.round(vectors, 4), axis=0))
    fit = vectors[_fit_sample(n, fit_cap, seed)]

    def kmeans(k):
        cls = KMeans if len(fit) <= 5000 else MiniBatchKMeans
        return cls(n_clusters=k, n_init=3, random_state=seed).fit(fit)

    if num_clusters == "auto":
        if distinct < 3:
            k = max(1, distinct)
        else:
            probe = fit[_fit_sample(len(fit), 3000, seed + 1)]
            best = None
            for k_try in range(2, min(AUTO_MAX_CLUSTERS, distinct - 1) + 1):
                labels = kmeans(k_try).predict(probe)
                if len(set(labels.tolist())) < 2:
                    continue
                score = silhouette_score(probe, labels, metric="cosine")
                if best is None or score > best[0] + 1e-6:
                    best = (score, k_try)
            k = best[1] if best else 1
    else:
        if int(num_clusters) < 1:
            raise SamtextError("num_clusters must be 'auto' or at least 1, got %r" % (num_clusters,))
        k = min(int(num_clusters), distinct)
    model = kmeans(k)
    return model.predict(vectors).astype(np.int64), k


def map_2d(vectors: np.ndarray, fit_cap: int = MapSettings.fit_cap, seed: int = MapSettings.seed,
           num_neighbors: int = 15,
           min_dist: float = 0.1) -> np.ndarray:
    """``(N, 2)`` UMAP coordinates of ``(N, D)`` vectors (cosine metric): fit on at most ``fit_cap`` of them,
    the rest placed by the fitted map."""
    import umap

    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < 3:
        return np.zeros((n, 2), dtype=np.float32)
    idx = _fit_sample(n, fit_cap, seed)
    reducer = umap.UMAP(n_neighbors=min(num_neighbors, len(idx) - 1), min_dist=min_dist, metric="cosine",
                        random_state=seed, init="random" if len(idx) < 10 else "spectral")
    points = np.zeros((n, 2), dtype=np.float32)
    points[idx] = reducer.fit_transform(vectors[idx])
    rest = np.setdiff1d(np.arange(n), idx)
    for start in range(0, len(rest), 50000):
        chunk = rest[start:start + 50000]
        points[chunk] = reducer.transform(vectors[chunk])
    return points
