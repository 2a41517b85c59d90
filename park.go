package wshub

import (
	"errors"
	"syscall"
)

// Parking. Most clients are idle most of the time, and a goroutine blocked
// in a read holds a stack of 4 to 8 KiB: half of what an idle client
// costs. So when a client's reader has handled what came and nothing more
// is buffered, it parks: it asks the hub's poller to watch the socket, and
// its goroutine ends. When bytes come (or the peer closes), the poller
// reads them without waiting (takePongs): if they were only pongs, the
// socket is watched again and no goroutine starts; else it starts a new
// reader, which reads what the poller read first and goes on as before.
// Closing a parked client wakes it, so that its reader sees the close and
// cleans up.
//
// The parked flag, under Client.mu, says who owns the reader: whoever
// turns it from true to false reads, or starts the goroutine. Only clients on a
// socket the poller can watch park (TCP on Linux, without TLS); others
// keep their reader, as do all where the poller is not available.

// errParked tells serve that the reader parked.
var errParked = errors.New("wshub: parked")

// sysFD returns the socket under conn, or -1 if the poller cannot watch
// it, and the RawConn for reads and writes that must not wait (rawIO).
// The number is used only while the client holds the connection open:
// every use is under Client.mu, before its close begins. The RawConn
// needs no lock: it fails once the socket is closed.
func sysFD(conn any) (int32, syscall.RawConn) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return -1, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, nil
	}
	fd := int32(-1)
	rc.Control(func(s uintptr) { fd = int32(s) })
	return fd, rc
}

// mayPark reports whether the reader may park: nothing is buffered above
// the socket, and the hub has a poller for it.
func (c *Client) mayPark() bool {
	if c.fd < 0 || c.netConn.early.Load() || !c.hub.polling() {
		return false
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	return c.br.Buffered() == 0 && len(c.filter.pending) == 0
}

// park hands the client's socket to the poller, unless the client is
// closing; true means the reader must end now.
func (c *Client) park() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return false
	}
	if err := c.hub.poll.watch(c.fd, c, c.armed); err != nil {
		c.hub.opts.Logger.Debug("wshub: not parked", "client", c.id, "err", err)
		return false
	}
	c.armed, c.parked = true, true
	return true
}

// wakeReaderLocked starts the reader of a parked client.
func (c *Client) wakeReaderLocked() {
	if c.parked {
		c.parked = false
		go c.serve(true)
	}
}

// probe reads what woke a parked reader, and reports whether it was only
// pongs (taken off, and the reader may park again).
func (c *Client) probe() bool {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.filter.probing = true
	_, err := c.br.Peek(1)
	c.filter.probing = false
	return err == errNothing
}
