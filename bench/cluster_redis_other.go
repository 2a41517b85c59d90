//go:build !linux

package main

import "os/exec"

// dieWithParent does nothing where there is no parent-death signal: a
// redis-server child outlives a bench killed by SIGKILL there.
func dieWithParent(*exec.Cmd) {}
