// Command etcd is the upstream etcd server, unchanged: the same entry point
// as go.etcd.io/etcd's main package, linked from the pinned module release so
// kubesink's tests can run a real control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
