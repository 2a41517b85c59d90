//go:build !linux

package wshub

import "syscall"

// poller is the Linux poller's stand-in elsewhere: no client parks.
type poller struct{}

// rawWrites says that rawIO writes nothing here: the hub's write pool
// is not used.
const rawWrites = false

// rawIO is the Linux one's stand-in: it writes nothing, so the writer
// goroutine writes pings.
type rawIO struct{}

func newRawIO([]byte) *rawIO                            { return &rawIO{} }
func (r *rawIO) write(rc syscall.RawConn, p []byte) int { return 0 }
func (c *Client) takePongs(*rawIO)                      {}

func (h *Hub) polling() bool                                  { return false }
func (p *poller) watch(fd int32, c *Client, armed bool) error { return errParked }
func (p *poller) forget(fd int32, c *Client)                  {}
func (p *poller) close()                                      {}
