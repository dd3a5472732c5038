"""Infrastructure every measurement stands on: Redis provisioning, the delay proxy, exact counting."""
