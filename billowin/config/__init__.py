"""Apps' config vars: validation and the Nomad template that renders a version."""
