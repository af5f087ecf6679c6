"""An approximate nearest-neighbour layer over a gallery index's rows: FAISS IVF-Flat.

Used above a measured gallery size (below it exact search is cheaper and perfect). Its rows are
the exact index's rows in the same order (FAISS numbers them as they are added), so a candidate
is re-scored and mapped to its subject by the exact index. Training and filling run in the
background while searches stay exact; the training is kept, so after an erasure the rows are
re-added without training again.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
from facegraph.graph.config import FaissConfig
from facegraph.models.embedding import Metric


def lists_for(faces: int) -> int:
    return max(16, 2 ** round(math.log2(4 * math.sqrt(max(faces, 1)))))


class IvfLayer:
    """IVF-Flat over (N, D) float32 rows (unit rows and inner product for cosine, L2 for euclidean)."""

    def __init__(self, config: FaissConfig, index, trained_for: int):
        self.config, self.index, self.trained_for = config, index, trained_for
        self.nlist = int(index.nlist)
        self.index.nprobe = config.nprobe

    @classmethod
    def trained(cls, config: FaissConfig, metric: Metric, dimension: int, faces: int, sample: np.ndarray) -> "IvfLayer":
        """A layer whose coarse quantizer is trained on ``sample`` (the slow part), with no rows yet."""
        faiss.omp_set_num_threads(config.threads)
        kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        quantizer = faiss.IndexFlatIP(dimension) if metric == "cosine" else faiss.IndexFlatL2(dimension)
        index = faiss.IndexIVFFlat(quantizer, dimension, config.nlist or lists_for(faces), kind)
        index.train(np.ascontiguousarray(sample, np.float32))
        return cls(config, index, faces)

    def empty(self) -> "IvfLayer":
        """The same training, no rows (for re-filling after an erasure)."""
        index = faiss.clone_index(self.index)
        index.reset()
        return IvfLayer(self.config, index, self.trained_for)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, rows: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(rows, np.float32))

    def candidates(self, queries: np.ndarray, width: int) -> np.ndarray:
        """(Q, width) row numbers of the closest rows found (-1 where fewer), closest first."""
        _, rows = self.index.search(np.ascontiguousarray(queries, np.float32), width)
        return rows
