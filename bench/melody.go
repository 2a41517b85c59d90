package main

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/olahol/melody"
)

// melodyServer is melody with its default Config. Melody has no rooms, so
// the server keeps its own index of sessions per room and broadcasts with
// Session.Write to each member, as BroadcastMultiple does: it writes to the
// session's buffered channel from the caller (a full buffer drops the message and reports
// ErrMessageBufferFull to the error handler).
type melodyServer struct {
	m *melody.Melody

	mu    sync.RWMutex
	rooms map[string]*sessionSet
	of    map[*melody.Session]string

	nMembers atomic.Int64
	nDropped atomic.Uint64
}

// sessionSet keeps a slice to broadcast over and each session's index
// in it, for a swap-remove.
type sessionSet struct {
	list []*melody.Session
	pos  map[*melody.Session]int
}

func newMelody() (server, error) {
	s := &melodyServer{
		m:     melody.New(),
		rooms: make(map[string]*sessionSet),
		of:    make(map[*melody.Session]string),
	}
	s.m.HandleConnect(func(sess *melody.Session) {
		s.add(sess.Request.URL.Query().Get("room"), sess)
	})
	s.m.HandleDisconnect(s.remove)
	s.m.HandleMessage(func(sess *melody.Session, msg []byte) {
		s.mu.RLock()
		room := s.of[sess]
		s.mu.RUnlock()
		s.publish(room, msg)
	})
	s.m.HandleError(func(_ *melody.Session, err error) {
		if errors.Is(err, melody.ErrMessageBufferFull) {
			s.nDropped.Add(1)
		}
	})
	return s, nil
}

func (s *melodyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.m.HandleRequest(w, r)
}

func (s *melodyServer) add(room string, sess *melody.Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.rooms[room]
	if set == nil {
		set = &sessionSet{pos: make(map[*melody.Session]int)}
		s.rooms[room] = set
	}
	set.pos[sess] = len(set.list)
	set.list = append(set.list, sess)
	s.of[sess] = room
	s.nMembers.Add(1)
}

func (s *melodyServer) remove(sess *melody.Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	room, ok := s.of[sess]
	if !ok {
		return
	}
	delete(s.of, sess)
	set := s.rooms[room]
	i := set.pos[sess]
	last := len(set.list) - 1
	set.list[i] = set.list[last]
	set.pos[set.list[i]] = i
	set.list[last] = nil
	set.list = set.list[:last]
	delete(set.pos, sess)
	if len(set.list) == 0 {
		delete(s.rooms, room)
	}
	s.nMembers.Add(-1)
}

func (s *melodyServer) publish(room string, payload []byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	set := s.rooms[room]
	if set == nil {
		return nil
	}
	// Session.Write per member, as BroadcastMultiple does, except that a
	// session closing does not stop the loop.
	for _, sess := range set.list {
		sess.Write(payload)
	}
	return nil
}

func (s *melodyServer) members() int   { return int(s.nMembers.Load()) }
func (s *melodyServer) kicked() uint64 { return s.nDropped.Load() }
func (s *melodyServer) close()         { s.m.Close() }
