// Built offline in GOPATH mode against Debian's packaged sources (golang-go,
// golang-github-vmware-govmomi-dev), which is what `make vcsim` runs:
//   GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= go build -o <out> .
// Go ignores this file in GOPATH mode; it names the package for editors and pins the language
// version. (Module mode would need govmomi's whole module graph, which Debian does not ship.)
module backupconsole/tests/vcsim

go 1.19
