"""Everything that stands Redis up for the session kit: shared configs and the local topology.
`deploy/redis/` holds the templates compose and Helm share; `deploy.local` runs them locally."""
