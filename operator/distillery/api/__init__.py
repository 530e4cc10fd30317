"""The DistillationJob API: pydantic models of the spec and status, the one source of truth.

The CRD in `crds/`, the defaults, the validation messages and `docs/api.md` are generated from these
classes. The package's modules, from the bottom up:

    base        the Model base class, cross-field rules, CEL rules, size limits
    kube_types  Kubernetes value types (names, quantities, images, tolerations), validated as the API server does
    pods        pod settings (per section and the chart's defaults) and a stage's runtime built on them
    storage     storage, object stores, the export, decontamination
    benchmarks  public benchmarks (lm-eval tasks) and the gate's floors on them
    stages      the generation, training and evaluation sections
    status      phase, conditions, reasons, progress, cost, artifacts
    job         the spec, the job, the API's names
    models_ref  model references: a path or a Hugging Face id, by their text (imported by its own name)

Every public name of these modules is re-exported here; the rest of the code imports it from `distillery.api`.
"""

from distillery.api.base import *  # noqa: F403
from distillery.api.benchmarks import *  # noqa: F403
from distillery.api.job import *  # noqa: F403
from distillery.api.kube_types import *  # noqa: F403
from distillery.api.pods import *  # noqa: F403
from distillery.api.stages import *  # noqa: F403
from distillery.api.status import *  # noqa: F403
from distillery.api.storage import *  # noqa: F403
