"""mdssl_jax."""
