"""FR training methods, one file each, registered by name (the trunk issue adds the registry)."""
