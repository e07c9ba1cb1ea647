// Command vcsim-ext runs VMware's vSphere simulator (govmomi's simulator package, as packaged by
// Debian) with the backup extensions the stock simulator lacks (see README.md and ext.go).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "listen address (port 0 picks a free port)")
	username := flag.String("username", "", "login user name (empty: any user/password is accepted)")
	password := flag.String("password", "", "login password")
	isESX := flag.Bool("esx", false, "simulate a standalone ESXi host instead of vCenter")
	useTLS := flag.Bool("tls", true, "serve HTTPS")
	certFile := flag.String("tlscert", "", "PEM certificate (default: a fresh 2048-bit self-signed one)")
	keyFile := flag.String("tlskey", "", "PEM private key for -tlscert")
	certOut := flag.String("cert-out", "", "write the served certificate (PEM) to this file")
	noExt := flag.Bool("no-backup-ext", false, "disable the backup extensions (stock simulator behaviour)")
	window := flag.Int64("qcda-window", 16<<20, "bytes QueryChangedDiskAreas covers per call (callers page with startOffset)")
	folderAuth := flag.Bool("folder-auth", true, "require a valid session cookie on /folder, as vCenter does (401 otherwise)")
	stdinWatch := flag.Bool("stdin-watch", false, "exit when stdin reaches EOF (the parent process went away)")

	model := simulator.VPX()
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters per datacenter")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "standalone hosts per datacenter")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "local datastores per datacenter")
	flag.IntVar(&model.Machine, "vm", model.Machine, "virtual machines per root resource pool")
	flag.IntVar(&model.Pool, "pool", model.Pool, "child resource pools per cluster")
	flag.IntVar(&model.Portgroup, "pg", model.Portgroup, "distributed port groups per datacenter")
	flag.BoolVar(&model.Autostart, "autostart", true, "power on the model's virtual machines")
	flag.Parse()

	if *window < blockSize || *window%blockSize != 0 {
		log.Fatalf("-qcda-window must be a positive multiple of %d", blockSize)
	}
	if *isESX {
		esxModel := simulator.ESX()
		esxModel.Datastore, esxModel.Machine, esxModel.Autostart = model.Datastore, model.Machine, model.Autostart
		model = esxModel
	}
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}

	model.Service.Listen = &url.URL{Host: *listen}
	if *username != "" {
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}
	var cert *tls.Certificate
	if *useTLS {
		var err error
		if cert, err = loadOrGenerateCert(*certFile, *keyFile); err != nil {
			log.Fatal(err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
		if *certOut != "" {
			if err := writeCertPEM(*certOut, cert); err != nil {
				log.Fatal(err)
			}
		}
	}

	thumbprintSHA256, thumbprintSHA1 := "", ""
	if cert != nil {
		thumbprintSHA256, thumbprintSHA1 = fingerprints(cert)
	}
	server := model.Service.NewServer()
	if !*noExt {
		// Nothing has the URL yet, so no request can race with swapping the handler.
		server.Config.Handler = newBackupExt(server.Config.Handler, *window, *folderAuth, thumbprintSHA1)
	}

	if cert != nil {
		fmt.Printf("VCSIM_THUMBPRINT_SHA256=%s\nVCSIM_THUMBPRINT_SHA1=%s\n", thumbprintSHA256, thumbprintSHA1)
	}
	// The launcher prints this line last: readers may stop at it.
	fmt.Printf("export GOVC_URL=%s GOVC_SIM_PID=%d\n", server.URL, os.Getpid())

	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGINT, syscall.SIGTERM)
	if *stdinWatch {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			done <- syscall.SIGTERM
		}()
	}
	<-done
	server.Close()
	model.Remove() // deletes the temporary datastore directories
}
