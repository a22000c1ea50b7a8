"""Built-in search spaces (YAML); `automl search --space NAME` finds them by file stem."""
