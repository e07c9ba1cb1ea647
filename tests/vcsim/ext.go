package main

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// backupExt sits in front of the simulator's HTTP mux. It answers the vSphere calls backup
// software needs and the stock simulator lacks (QueryChangedDiskAreas, ExportVm,
// ExportSnapshot, ConsolidateVMDisks_Task), and adds side effects to calls the simulator does
// implement (a snapshot freezes its disks and gets CBT changeIds; removing it deletes the frozen
// copies; reverting copies them back; toggling changeTrackingEnabled resets CBT). Everything
// else passes through untouched.
//
// Why a front handler rather than a wrapper type registered for VirtualMachine: simulator code
// type-asserts *simulator.VirtualMachine internally, so a wrapper breaks snapshots.
type backupExt struct {
	inner      http.Handler
	window     int64 // bytes one QueryChangedDiskAreas answer covers at most
	folderAuth bool
	thumbprint string // SHA-1, for HttpNfcLeaseDeviceUrl.sslThumbprint

	mu       sync.Mutex
	epochs   map[diskID]*cbtEpoch
	changes  map[string]*changeRecord                      // by changeId, outlives its snapshot
	frozen   map[types.ManagedObjectReference][]frozenDisk // by snapshot
	leftover []frozenDisk                                  // snapshot gone, file still hot-added elsewhere
	leases   map[string]*nfcLease                          // by lease id (the /nfc/<id>/ URL part)
	rdm      *rdmShield
}

func newBackupExt(inner http.Handler, window int64, folderAuth bool, thumbprint string) *backupExt {
	return &backupExt{
		inner:      inner,
		window:     window,
		folderAuth: folderAuth,
		thumbprint: thumbprint,
		epochs:     make(map[diskID]*cbtEpoch),
		changes:    make(map[string]*changeRecord),
		frozen:     make(map[types.ManagedObjectReference][]frozenDisk),
		leases:     make(map[string]*nfcLease),
		rdm:        newRDMShield(),
	}
}

func (b *backupExt) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && (r.URL.Path == "/sdk" || r.URL.Path == "/sdk/vimService"):
		b.serveSDK(w, r)
		return
	case strings.HasPrefix(r.URL.Path, "/nfc/"):
		if b.serveLease(w, r) {
			return
		}
	case strings.HasPrefix(r.URL.Path, "/folder/"):
		// vCenter answers 401 without a session cookie; the simulator serves anyone.
		if b.folderAuth && !validSession(b.inner, r) {
			http.Error(w, "a valid vmware_soap_session cookie is required", http.StatusUnauthorized)
			return
		}
	}
	b.inner.ServeHTTP(w, r)
}

func (b *backupExt) serveSDK(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	method, err := decodeRequest(body)
	if err != nil {
		forward(w, replay(b.inner, r, body)) // let the simulator report the malformed request
		return
	}
	switch {
	case layoutMethods[method.Name]:
		b.rdm.mu.Lock()
		defer b.rdm.mu.Unlock()
		body = b.rdm.rewriteRequest(method, body)
		defer b.rdm.reveal(b.rdm.hide())
	case !longPolls[method.Name]:
		b.rdm.mu.RLock()
		defer b.rdm.mu.RUnlock()
	}

	switch method.Name {
	case "QueryChangedDiskAreas", "ExportVm", "ExportSnapshot", "ConsolidateVMDisks_Task":
		if !validSession(b.inner, r) {
			fail(&types.NotAuthenticated{NoPermission: types.NoPermission{
				Object: method.This, PrivilegeId: "System.View",
			}}, "The session is not authenticated.").write(w)
			return
		}
		b.answer(method, r).write(w)
	case "ReconfigVM_Task":
		before, known := cbtEnabled(method.This)
		rec := replay(b.inner, r, body)
		if after, _ := cbtEnabled(method.This); known && after != before {
			b.resetCBT(method.This)
		}
		forward(w, rec)
	case "CreateSnapshot_Task":
		rec := replay(b.inner, r, body)
		if res, ok := taskResult(rec); ok {
			if snap, isRef := res.(types.ManagedObjectReference); isRef {
				if err := b.afterSnapshot(method.This, snap); err != nil {
					log.Printf("backup-ext: snapshot %s of %s: %v", snap.Value, method.This.Value, err)
				}
			}
		}
		forward(w, rec)
	case "RemoveSnapshot_Task", "RemoveAllSnapshots_Task", "Destroy_Task", "UnregisterVM":
		rec := replay(b.inner, r, body)
		b.collectSnapshots()
		forward(w, rec)
	case "RevertToSnapshot_Task", "RevertToCurrentSnapshot_Task":
		target := method.This
		if method.Name == "RevertToCurrentSnapshot_Task" {
			target = currentSnapshot(method.This)
		}
		rec := replay(b.inner, r, body)
		if _, ok := taskResult(rec); ok {
			if err := b.revert(target); err != nil {
				log.Printf("backup-ext: revert to %s: %v", target.Value, err)
			}
		}
		forward(w, rec)
	default:
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		b.inner.ServeHTTP(w, r)
	}
}

func (b *backupExt) answer(method *simulator.Method, r *http.Request) result {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	switch req := method.Body.(type) {
	case *types.QueryChangedDiskAreas:
		return b.queryChangedDiskAreas(req)
	case *types.ExportVm:
		return b.exportVM(req.This, scheme)
	case *types.ExportSnapshot:
		return b.exportSnapshot(req.This, scheme)
	case *types.ConsolidateVMDisks_Task:
		return b.consolidate(req.This)
	}
	return fail(&types.MethodNotFound{Receiver: method.This, Method: method.Name}, "not implemented")
}

// taskResult gives the result of the task a *_Task call returned, if it succeeded. The
// simulator runs tasks synchronously, so the task is finished when its answer is.
func taskResult(rec *httptest.ResponseRecorder) (types.AnyType, bool) {
	ref, ok := returnedRef(rec)
	if !ok || ref.Type != "Task" {
		return nil, false
	}
	task, ok := simulator.Map.Get(ref).(*simulator.Task)
	if !ok {
		return nil, false
	}
	var info types.TaskInfo
	simulator.Map.WithLock(task, func() { info = task.Info })
	return info.Result, info.State == types.TaskInfoStateSuccess
}
