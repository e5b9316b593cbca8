"""The base layer every stage may import: where state lives, YAML files, the policy."""
