package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill cmd's process when the bench dies,
// even by SIGKILL, which leaves no deferred stop to run: unlike the
// bench's own children, which exit once their stdin closes, redis-server
// would serve on.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
