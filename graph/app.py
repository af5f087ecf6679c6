"""The app builder: ``serve run cluster/local.yaml`` -> ``build_app(args)``."""

from __future__ import annotations

from ray.serve import Application

from facegraph.deployments.deepfake import DeepfakeClassifier
from facegraph.deployments.detector import Detector
from facegraph.deployments.gallery import Gallery
from facegraph.deployments.recognizer import Recognizer
from facegraph.graph.config import FacegraphConfig, StageConfig
from facegraph.graph.ingress import Ingress

DEPLOYMENT_NAMES = {
    "detector": "Detector",
    "recognizer": "Recognizer",
    "deepfake": "DeepfakeClassifier",
    "gallery": "Gallery",
    "ingress": "Ingress",
}


def build_app(args: dict | FacegraphConfig) -> Application:
    """Compose Ingress(Detector, Recognizer?, DeepfakeClassifier?, Gallery?) from one config."""
    config = args if isinstance(args, FacegraphConfig) else FacegraphConfig.model_validate(args or {})
    cache = config.cache_dir()
    detector = Detector.options(
        name=DEPLOYMENT_NAMES["detector"], **config.detector.deployment.serve_options(batched=True)
    ).bind(config.detector.model, cache, config.ingress.max_pixels, config.ingress.video_limits())
    branches = {}
    for stage, deployment in (("recognizer", Recognizer), ("deepfake", DeepfakeClassifier)):
        stage_config: StageConfig | None = getattr(config, stage)
        branches[stage] = (
            None
            if stage_config is None
            else deployment.options(name=DEPLOYMENT_NAMES[stage], **stage_config.deployment.serve_options(batched=True)).bind(
                stage_config.model, cache
            )
        )
    store = config.gallery_store()
    gallery = None
    if store is not None:
        gallery_deployment = config.gallery.deployment
        gallery = Gallery.options(
            name=DEPLOYMENT_NAMES["gallery"], **gallery_deployment.serve_options(batched=True)
        ).bind(store)
    ingress_options = config.ingress.deployment.serve_options()
    return Ingress.options(name=DEPLOYMENT_NAMES["ingress"], **ingress_options).bind(
        detector, branches["recognizer"], branches["deepfake"], config, config.api_keys(), DEPLOYMENT_NAMES, gallery
    )
