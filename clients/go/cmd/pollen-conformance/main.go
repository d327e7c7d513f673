// Command pollen-conformance hosts the conformance model of spec Annex C in the Go SDK's
// ordinary client loop, for `pollen conformance client -- pollen-conformance`, and answers the
// golden vectors for `pollen conformance codec -- pollen-conformance codec`.
//
// Client mode reads the settings of Annex C.1 from the environment:
// POLLEN_CONFORMANCE_SERVER, POLLEN_CONFORMANCE_NODE_ID, and either
// POLLEN_CONFORMANCE_INSECURE=1 or POLLEN_CONFORMANCE_ROOT_CERT. It exits 0 after a shutdown
// instruction (or SIGTERM), 1 on a fatal error and 2 on bad settings.
//
// Codec mode (argument "codec", or POLLEN_CONFORMANCE_MODE=codec) reads framed JSON requests
// on standard input and writes one framed answer per request (Annex C.4).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"github.com/pollen-fl/pollen/clients/go/pollen"
)

func main() {
	if (len(os.Args) > 1 && os.Args[1] == "codec") || os.Getenv("POLLEN_CONFORMANCE_MODE") == "codec" {
		if err := serveCodec(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "pollen-conformance codec:", err)
			os.Exit(1)
		}
		return
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("case", os.Getenv("POLLEN_CONFORMANCE_CASE"))
	opts, err := optionsFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pollen-conformance:", err)
		os.Exit(2)
	}
	opts.Logger = logger
	opts.Agent = "pollen-go-conformance/1"
	if err := pollen.RunUntilSignal(newModel(), opts); err != nil {
		logger.Error("pollen-conformance: stopped", "err", err)
		os.Exit(1)
	}
}

// optionsFromEnv applies Annex C.1; everything else keeps the SDK's defaults (PLN-CNF-001).
func optionsFromEnv() (pollen.Options, error) {
	opts := pollen.Options{Server: os.Getenv("POLLEN_CONFORMANCE_SERVER"), NodeID: os.Getenv("POLLEN_CONFORMANCE_NODE_ID")}
	root := os.Getenv("POLLEN_CONFORMANCE_ROOT_CERT")
	insecure := os.Getenv("POLLEN_CONFORMANCE_INSECURE") == "1"
	if insecure == (root != "") {
		return opts, fmt.Errorf("set exactly one of POLLEN_CONFORMANCE_ROOT_CERT and POLLEN_CONFORMANCE_INSECURE=1")
	}
	if insecure {
		opts.Insecure = true
		return opts, nil
	}
	pem, err := os.ReadFile(root)
	if err != nil {
		return opts, err
	}
	// Only the given CA is trusted (PLN-CNF-003), not the system's roots.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return opts, fmt.Errorf("no certificate in %s", root)
	}
	opts.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return opts, nil
}
