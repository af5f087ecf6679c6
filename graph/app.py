"""The app builder: ``serve run cluster/local.yaml`` -> ``build_app(args)``."""

from __future__ import annotations

from ray.serve import Application

from deployments.deepfake import DeepfakeClassifier
from deployments.detector import Detector
from deployments.gallery import Gallery
from deployments.recognizer import Recognizer
from graph.config import FacegraphConfig, StageConfig
from graph.ingress import Ingress

DEPLOYMENT_NAMES = {
    "detector": "Detector",
    "recognizer": "Recognizer",
    "deepfake": "DeepfakeClassifier",
    "gallery": "Gallery",
    "ingress": "Ingress",
}


def _user_config(stage: StageConfig) -> dict:
    return stage.deployment.batching.model_dump()


def build_app(args: dict | FacegraphConfig) -> Application:
    """Compose Ingress(Detector, Recognizer?, DeepfakeClassifier?, Gallery?) from one config."""
    config = args if isinstance(args, FacegraphConfig) else FacegraphConfig.model_validate(args or {})
    cache = str(config.cache_dir())
    detector = Detector.options(
        name=DEPLOYMENT_NAMES["detector"], **config.detector.deployment.serve_options(_user_config(config.detector))
    ).bind(config.detector.model.model_dump(), cache, config.ingress.max_pixels)
    branches = {}
    for stage, deployment in (("recognizer", Recognizer), ("deepfake", DeepfakeClassifier)):
        stage_config: StageConfig | None = getattr(config, stage)
        branches[stage] = (
            None
            if stage_config is None
            else deployment.options(name=DEPLOYMENT_NAMES[stage], **stage_config.deployment.serve_options(_user_config(stage_config))).bind(
                stage_config.model.model_dump(), cache
            )
        )
    store = config.gallery_store()
    gallery = None
    if store is not None:
        gallery_deployment = config.gallery.deployment
        gallery = Gallery.options(
            name=DEPLOYMENT_NAMES["gallery"], **gallery_deployment.serve_options(gallery_deployment.batching.model_dump())
        ).bind(store)
    ingress_options = config.ingress.deployment.serve_options()
    return Ingress.options(name=DEPLOYMENT_NAMES["ingress"], **ingress_options).bind(
        detector, branches["recognizer"], branches["deepfake"], config, config.api_keys(), DEPLOYMENT_NAMES, gallery
    )
