package redisengine

// Sharded reports whether e publishes with SPUBLISH: its server is a
// cluster.
func Sharded(e *Engine) bool { return e.sharded.Load() }
