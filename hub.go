package wshub

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"
)

// Hub accepts WebSocket connections as an http.Handler and keeps track of
// its clients and rooms. Create one with New and mount it on any router:
//
//	mux.Handle("/ws", hub)
//
// All methods are safe for concurrent use, including from inside hooks and
// handlers. The zero Hub is not usable.
//
// Locks, outermost first: a room's follow lock (held across the Engine's
// Follow, Unfollow and presence watch of that room), engineMu (read-held
// around every engine call, so that Close waits for them), followMu,
// bcastMu, Hub.mu (clients and rooms), room.mu (a room's members; every
// delivery, join and presence diff of the room queues under it),
// Hub.presMu, room.ownMu, presRoom.mu, Client.mu. These last are held
// only to change memory, never while user code runs. Client.grantMu,
// around a grant's join and its expiry, comes before them all. The memory engine
// delivers inside Publish and Follow: there a Codec runs under the first two.
type Hub struct {
	handler  Handler
	opts     options
	accept   websocket.AcceptOptions
	encKey   []int          // codec index → its slot in an encoding
	id       string         // prefixes the ids of this hub's publishes
	presence PresenceEngine // Options.Engine, if it shares presence
	memory   bool           // Options.Engine is the memory engine, whose wait never blocks

	codecUsers []atomic.Int64 // connected clients by encoding slot
	nextPub    atomic.Uint64  // numbers this hub's publishes

	presMu sync.Mutex // guards pres
	pres   map[string]*presRoom

	clock clock // time, for tokens' expiries

	followMu sync.Mutex // guards follows
	follows  map[string]*follow

	mu      sync.RWMutex
	clients map[*Client]struct{}
	waiting map[*Client]struct{} // clients yet to sign in with their first frame
	rooms   map[string]*room
	pending int // upgrades in progress, counted against MaxClients

	bcastMu sync.Mutex // orders hub-wide broadcasts

	denyHint sync.Once // logs once that a nil AuthorizeJoin denies every join

	// Shutdown waits for live to reach zero: it counts the hub's goroutines
	// (and upgrades in progress), except those running user code, so that a
	// hook may call Shutdown or Close without waiting for itself.
	closing   atomic.Bool
	live      atomic.Int64
	drained   chan struct{}
	drainOnce sync.Once

	engineMu     sync.RWMutex // held for reading around engine calls
	engineClosed bool

	m counters // behind Stats (metrics.go)

	admission admission // of upgrades, while the process is overloaded

	bufPool sync.Pool // *[]byte: batch frames and corkConn's pending bytes

	poll poller    // watches parked clients' sockets (park.go)
	keep keepalive // pings the clients (keepalive.go)
	pool writePool // writes for the clients without waiting (pool.go)
}

// New returns a hub that passes application messages to handler (which may
// be nil: application messages are then answered with "unknown message
// type", ErrInvalid).
// opts may be nil for the defaults.
func New(handler Handler, opts *Options) *Hub {
	h := &Hub{
		handler: handler,
		opts:    opts.withDefaults(),
		clients: make(map[*Client]struct{}),
		waiting: make(map[*Client]struct{}),
		rooms:   make(map[string]*room),
		clock:   realClock,
		drained: make(chan struct{}),
		id:      newID(),

		admission: admission{floor: admitFloor},
		m:         newCounters(),

		follows: make(map[string]*follow),
		pres:    make(map[string]*presRoom),
	}
	// Buffers start small and grow with the batch, so a writer holds about
	// what it writes, not a maximum.
	h.bufPool.New = func() any {
		b := make([]byte, 0, 4<<10)
		return &b
	}
	h.presence, _ = h.opts.Engine.(PresenceEngine)
	if ce, ok := h.opts.Engine.(CommandEngine); ok {
		if err := ce.HandleCommands(h.onCommand); err != nil {
			h.opts.Logger.Warn("wshub: the engine carries no commands from other hubs", "err", err)
		}
	}
	_, h.memory = h.opts.Engine.(*memEngine)
	h.accept = websocket.AcceptOptions{
		Subprotocols:   h.opts.codecNames,
		OriginPatterns: h.opts.OriginPatterns,
	}
	// The JSON codecs encode a message alike, so they share the JSON slot
	// (the last one), which the engine uses too.
	h.codecUsers = make([]atomic.Int64, len(h.opts.Codecs)+1)
	h.encKey = make([]int, len(h.opts.Codecs))
	for i, c := range h.opts.Codecs {
		h.encKey[i] = i
		switch c.(type) {
		case JSONCodec, JSONBatchCodec:
			h.encKey[i] = len(h.opts.Codecs)
		}
	}
	return h
}

// Room returns a handle to the room called name. It does not create the
// room; clients joining it do.
func (h *Hub) Room(name string) Room { return Room{hub: h, name: name} }

// Broadcast sends m to every client connected to this hub (not to other
// hubs' clients: use a room for that), as a message of type "message" when
// m.Type is empty. It never waits for a client and does not modify m; m is
// encoded before any lock is taken. It returns ErrHubClosed once the hub is
// closing, also when closing began during the call and m did not reach
// every client, and the codec's error if m cannot be encoded.
func (h *Hub) Broadcast(ctx context.Context, m *Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if h.closing.Load() {
		return ErrHubClosed
	}
	out := m.orMessage()
	enc := h.newEncoding(&out)
	enc.prepare()
	h.bcastMu.Lock()
	defer h.bcastMu.Unlock()
	h.mu.RLock()
	var late []*Client
	for c := range h.clients {
		enc.sendOrDefer(c, nil, &late)
	}
	h.mu.RUnlock()
	for _, c := range late {
		enc.send(c, nil)
	}
	enc.count()
	return enc.result()
}

// ServeHTTP upgrades the request to a WebSocket connection and serves the
// client until it disconnects; it returns once the connection is set up.
// It answers instead 503 with a Retry-After of 1 or 2 s when the hub is
// closing, full (MaxClients) or overloaded (in a reconnect storm it lets
// clients in a share at a time), 403 for a cross-origin request not
// allowed by OriginPatterns, and the status of Authenticate's refusal.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := h.reserve()
	if err == nil && !h.admission.admit(r.Context(), h.closing.Load) {
		h.unreserve()
		err = errOverloaded
		if h.closing.Load() {
			err = ErrHubClosed
		}
	}
	if err != nil {
		h.refuse(w, err)
		return
	}
	c, err := h.upgrade(w, r)
	if err != nil {
		h.opts.Logger.Debug("wshub: upgrade refused", "remote", r.RemoteAddr, "err", err)
		h.unreserve()
		return
	}
	go c.run()
}

// reserve counts an upgrade in progress, so that Shutdown waits for it and
// MaxClients counts it.
func (h *Hub) reserve() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing.Load() {
		return ErrHubClosed
	}
	if h.opts.MaxClients > 0 && len(h.clients)+len(h.waiting)+h.pending >= h.opts.MaxClients {
		return errTooManyClients
	}
	h.pending++
	h.hold()
	return nil
}

func (h *Hub) unreserve() {
	h.mu.Lock()
	h.pending--
	h.mu.Unlock()
	h.release()
}

func (h *Hub) upgrade(w http.ResponseWriter, r *http.Request) (*Client, error) {
	var id Identity
	if h.opts.Authenticate != nil {
		var err error
		h.release()
		id, err = h.opts.Authenticate(r)
		h.hold()
		if err != nil {
			status, body := http.StatusUnauthorized, err.Error()
			if re, ok := errors.AsType[*rejectError](err); ok {
				status = re.status
			}
			h.m.refusals[refAuth].Add(1)
			http.Error(w, body, status)
			return nil, err
		}
		if h.closing.Load() { // Shutdown began while Authenticate ran
			h.refuse(w, ErrHubClosed)
			return nil, ErrHubClosed
		}
	}
	hw := &hijackWriter{ResponseWriter: w, hub: h}
	conn, err := websocket.Accept(hw, r, &h.accept)
	if err != nil {
		if hw.status == http.StatusForbidden {
			h.m.refusals[refOrigin].Add(1)
		} else {
			h.m.refusals[refHandshake].Add(1)
		}
		return nil, err
	}
	c := newClient(h, conn, hw, id)
	if c.info, err = encodeInfo(c.id, id.Info); err != nil {
		h.opts.Logger.Error(err.Error())
		conn.Close(websocket.StatusInternalError, "server error")
		return nil, err
	}
	h.mu.Lock()
	if h.closing.Load() {
		// Too late for a 503: ServeHTTP's unreserve releases the slot. The
		// connection is cut, since a close handshake would hold up Close.
		h.mu.Unlock()
		conn.CloseNow()
		return nil, ErrHubClosed
	}
	h.pending--
	if h.tokenFirst() {
		h.waiting[c] = struct{}{}
	} else {
		h.clients[c] = struct{}{}
	}
	h.codecUsers[h.encKey[c.codecIndex]].Add(1)
	h.mu.Unlock()
	h.m.accepted.Add(1)
	return c, nil
}

// connBufSize is the size of each connection's read and write buffers.
// net/http's are 4 KiB each; most clients are idle most of the time, and
// smaller buffers are most of the memory an idle client saves. Bigger
// frames go through corkConn, which gathers a batch's writes anyway.
const connBufSize = 1024

// hijackWriter remembers the connection Accept hijacks, so that Close can
// cut it at once even while a close handshake is under way, gives it
// smaller buffers, and puts a corkConn under its writes.
type hijackWriter struct {
	http.ResponseWriter
	hub    *Hub
	cork   *corkConn
	br     *bufio.Reader // coder's reader
	status int           // of an answer that is not the upgrade
}

func (w *hijackWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.cork = &corkConn{Conn: conn, hub: w.hub}
	w.cork.filter.src = conn
	// coder/websocket reads through brw.Reader, which it resets to read
	// the bytes it holds, then w.cork.
	if n := brw.Reader.Buffered(); n == 0 {
		brw.Reader = bufio.NewReaderSize(conn, connBufSize)
	} else { // keep what the client already sent
		w.cork.early.Store(true)
		early, _ := brw.Reader.Peek(n)
		w.cork.filter.skim(early)
	}
	w.br = brw.Reader
	brw.Writer = bufio.NewWriterSize(w.cork, connBufSize)
	// coder/websocket closes what Hijack returns: the cork, so that a close
	// frame it holds is written first.
	return w.cork, brw, nil
}

// Shutdown closes the hub gracefully: new upgrades get 503, every client's
// queued messages are written, then each is closed with status 1001 (going
// away) and ErrHubClosed as its disconnect reason. Shutdown returns nil once
// every connection is closed and the hub's goroutines have exited; a hook or
// handler still running then (its context is done) finishes on its own,
// which is what lets one call Shutdown. In particular, OnDisconnect hooks
// may still be running, or not have begun, when Shutdown returns: an
// application that must see them all counts them itself. If ctx ends
// first, Shutdown closes the remaining connections at once, waits for the
// goroutines and returns ctx.Err(). Shutdown may be called many times,
// concurrently with Close.
func (h *Hub) Shutdown(ctx context.Context) error {
	// Held until every close has begun: clients whose read goroutines are
	// in user code hold nothing, and the hub must not look drained before
	// their writers start the close handshake.
	h.hold()
	for _, c := range h.beginClose() {
		c.closeWith(websocket.StatusGoingAway, "server shutting down", ErrHubClosed, true)
	}
	h.release()
	select {
	case <-h.drained:
		h.keep.close()
		h.pool.stop()
		h.poll.close()
		h.closeEngine()
		return nil
	case <-ctx.Done():
	}
	h.Close()
	return ctx.Err()
}

// closeEngine closes the engine once its calls under way have returned;
// withEngine makes no call after that.
func (h *Hub) closeEngine() {
	h.engineMu.Lock()
	defer h.engineMu.Unlock()
	if h.engineClosed {
		return
	}
	h.engineClosed = true
	if err := h.opts.Engine.Close(); err != nil {
		h.opts.Logger.Warn("wshub: closing engine", "err", err)
	}
}

// withEngine calls f with the engine, unless it is closed: then it
// returns ErrHubClosed. Clients whose hooks were still running when
// Shutdown returned leave their rooms later, without the engine, which
// has dropped every follow.
func (h *Hub) withEngine(f func(e Engine) error) error {
	h.engineMu.RLock()
	defer h.engineMu.RUnlock()
	if h.engineClosed {
		return ErrHubClosed
	}
	return f(h.opts.Engine)
}

// Close closes the hub at once: new upgrades get 503 and every connection
// is cut without a close handshake and without writing queued messages
// (they count as Dropped). It waits for the hub's goroutines as Shutdown does
// and returns nil. Close may be called many times, from any goroutine.
func (h *Hub) Close() error {
	h.hold() // as in Shutdown
	clients := h.beginClose()
	var g errgroup.Group
	g.SetLimit(64)
	for _, c := range clients {
		g.Go(func() error {
			c.abort(ErrHubClosed)
			return nil
		})
	}
	g.Wait()
	h.release()
	<-h.drained
	h.keep.close()
	h.pool.stop()
	h.poll.close()
	h.closeEngine()
	return nil
}

// beginClose marks the hub closing and returns its clients.
func (h *Hub) beginClose() []*Client {
	h.mu.Lock()
	h.closing.Store(true)
	h.stopPresence()
	clients := make([]*Client, 0, len(h.clients)+len(h.waiting))
	for c := range h.clients {
		clients = append(clients, c)
	}
	for c := range h.waiting {
		clients = append(clients, c)
	}
	h.mu.Unlock()
	return clients
}

func (h *Hub) hold() { h.live.Add(1) }

func (h *Hub) release() {
	if h.live.Add(-1) == 0 && h.closing.Load() {
		h.drainOnce.Do(func() { close(h.drained) })
	}
}

// userCode runs f, a hook or handler, outside the goroutines Shutdown
// waits for.
func (h *Hub) userCode(f func()) {
	h.release()
	defer h.hold()
	f()
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (h *Hub) getBuf() *[]byte { return h.bufPool.Get().(*[]byte) }

// putBuf returns a buffer to the pool, unless one big message grew it
// past what a batch needs.
func (h *Hub) putBuf(b *[]byte) {
	if cap(*b) <= 2*maxBatchBytes {
		h.bufPool.Put(b)
	}
}
