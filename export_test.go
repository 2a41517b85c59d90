package wshub

// PingNow starts a keepalive ping of c at once, as its timer would.
func PingNow(c *Client) { c.ping() }
