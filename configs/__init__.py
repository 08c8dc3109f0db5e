"""The shipped YAML configs (package data): demo.yaml, example.yaml,
strategies.yaml."""
