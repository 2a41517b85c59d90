//go:build !linux

package wshub

// poller is the Linux poller's stand-in elsewhere: no client parks.
type poller struct{}

func (h *Hub) polling() bool                                  { return false }
func (p *poller) watch(fd int32, c *Client, armed bool) error { return errParked }
func (p *poller) forget(fd int32, c *Client)                  {}
func (p *poller) close()                                      {}
