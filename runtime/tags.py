"""Every MLflow tag key this project writes or reads, named once.

Runs already stored, the tests and users' own queries (``tags.`automl.role` = 'child'``)
read these names: change a value here and old experiments no longer match. Tag values
(roles such as ``child``, outcomes) stay with the code that writes them.
"""

# MLflow's own keys
PARENT_TAG = "mlflow.parentRunId"  # on a nested run: its parent run (MLflow's nesting)
RUN_NAME_TAG = "mlflow.runName"  # on a run: its name
EXPERIMENT_KIND = "mlflow.experimentKind"  # on an experiment: the view the UI opens it on
DATASET_CONTEXT_TAG = "mlflow.data.context"  # on a run's dataset input: what it was used for
NOTE_TAG = "mlflow.note.content"  # on a run: its description (Markdown), shown on its page
#: on an experiment, + a key: a saved view of the UI's runs page (MLflow's "shared view")
VIEW_TAG_PREFIX = "mlflow.sharedViewState."

# any job's runs (runtime)
ROLE_TAG = "automl.role"  # what a run is: search, child, rl-seed, evaluation
TRIAL_TAG = "automl.trial"  # the trial's number in its job (child number, seed)
OUTCOME_TAG = "automl.outcome"  # on a trial its job stopped early: why it stopped
ERROR_TAG = "automl.error"  # on a failed trial: its error
ENDED_TAG = "automl.ended"  # on a parent run: why its job ended
CODE_VERSION_TAG = "automl.code_version"  # on every trial: the project's version and commit
NODE_TAG = "ray.node_id"  # on the trial's MLflow run: the Ray node it ran on
RESOURCES_TAG = "ray.resources"  # ... what Ray reserved for it there (JSON, by resource name)
GPUS_TAG = "ray.gpu_ids"  # ... and which of that node's GPUs it was given (when it asked)

# a search and its children (automl)
BEST_CHILD_TAG = "automl.best_child_run_id"  # on the parent run: its best child so far
ARCHITECTURE_TAG = "automl.architecture"  # on a child's run: its architecture (JSON)
ARCH_SHORT_TAG = "automl.arch"  # ... and its short form (gru[128t 64r]), a column in the UI
DEVICE_TAG = "automl.device"  # on a child's run: what it trained on (cpu, cuda:0)
DATA_TAG = "automl.data"  # on a child's run: the corpus its search used
FRONTEND_TAG = "automl.frontend"  # ... the frontend that made its features
DATA_FINGERPRINT_TAG = "automl.data_fingerprint"  # ... a digest of those features
SEED_TAG = "automl.seed"  # ... the seed it trained on (the search's, but a confirmation's)
CONFIRMS_TAG = "automl.confirms"  # on a confirmation: the run of the child it retrains
MODEL_URI_TAG = "automl.model_uri"  # on a child or evaluation run: its logged MLflow model
EVALUATES_TAG = "automl.evaluates"  # on an evaluation run: the child it evaluates
EVALUATION_TAG = "automl.evaluation_run_id"  # on the child: its latest evaluation
#: on a registered model version: these values of its evaluation (``automl evaluate``)
MODEL_VERSION_TAGS = ("test_uar_mean", "test_uar_std", "child_run_id")

# an RL training (rl)
ENV_TAG = "automl.env"  # on every seed's run: the environment it trained in
