"""What both command lines stand on: user errors and the exit-2 runner, typed options,
atomic files, starting or joining Ray, the MLflow run lifecycle, and the one wrapper every
Ray trial runs inside. It imports neither ``automl`` nor ``rl``; both import it."""
