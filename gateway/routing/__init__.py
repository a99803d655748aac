"""The routing stage: fallback chain, deployments, balancer, breaker, retries and deadline."""
