// Command gitserver serves the bare repositories under -root over Git's smart
// HTTP protocol on loopback, for countersign's GitOps tests. It is a thin
// wrapper around Flux's own test server (github.com/fluxcd/pkg/gittestserver,
// which runs the machine's git), so source-controller clones from it exactly
// as it does in Flux's tests. Once serving, it writes its base URL to
// -url-file, which tests/gitops/up waits for.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/fluxcd/pkg/gittestserver"
)

func main() {
	root := flag.String("root", "", "directory holding the bare repositories (NAME.git)")
	urlFile := flag.String("url-file", "", "file to write the server's base URL to once it serves")
	flag.Parse()
	if *root == "" || *urlFile == "" {
		log.Fatal("usage: gitserver -root DIR -url-file FILE")
	}
	server := gittestserver.NewGitServer(*root)
	if err := server.StartHTTP(); err != nil {
		log.Fatalf("starting the git server: %v", err)
	}
	defer server.StopHTTP()
	if err := os.WriteFile(*urlFile, []byte(server.HTTPAddress()+"\n"), 0o644); err != nil {
		log.Fatalf("writing %s: %v", *urlFile, err)
	}
	log.Printf("serving %s at %s", *root, server.HTTPAddress())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
