package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// ExportVm and ExportSnapshot: an HttpNfcLease whose deviceUrls ("https://*/nfc/<id>/disk-N.vmdk",
// the client replaces "*" with the host it connected to) serve each disk's raw flat data with
// HTTP Range support, while the lease is open. ESXi serves streamOptimized VMDK there; raw data
// is what a backup reads, so that is what the simulator serves.

type nfcLease struct {
	mo.HttpNfcLease // first field: the simulator's PropertyCollector reads it

	ext   *backupExt
	id    string
	files map[string]leaseFile // by URL file name
}

type leaseFile struct {
	path     string // local flat file
	capacity int64
}

func (l *nfcLease) close(state types.HttpNfcLeaseState) {
	l.ext.mu.Lock()
	delete(l.ext.leases, l.id)
	l.ext.mu.Unlock()
	l.State = state
}

func (l *nfcLease) HttpNfcLeaseComplete(req *types.HttpNfcLeaseComplete) soap.HasFault {
	l.close(types.HttpNfcLeaseStateDone)
	return &methods.HttpNfcLeaseCompleteBody{Res: new(types.HttpNfcLeaseCompleteResponse)}
}

func (l *nfcLease) HttpNfcLeaseAbort(req *types.HttpNfcLeaseAbort) soap.HasFault {
	l.close(types.HttpNfcLeaseStateError)
	return &methods.HttpNfcLeaseAbortBody{Res: new(types.HttpNfcLeaseAbortResponse)}
}

func (l *nfcLease) HttpNfcLeaseProgress(req *types.HttpNfcLeaseProgress) soap.HasFault {
	l.TransferProgress = req.Percent
	return &methods.HttpNfcLeaseProgressBody{Res: new(types.HttpNfcLeaseProgressResponse)}
}

type exportDisk struct {
	disk *types.VirtualDisk
	file leaseFile
}

func (b *backupExt) exportVM(vmRef types.ManagedObjectReference, scheme string) result {
	vm, ok := lookupVM(vmRef)
	if !ok {
		return fail(&types.ManagedObjectNotFound{Obj: vmRef}, "The object %s has already been deleted", vmRef.Value)
	}
	var state types.VirtualMachinePowerState
	simulator.Map.WithLock(vm, func() { state = vm.Runtime.PowerState })
	if state != types.VirtualMachinePowerStatePoweredOff {
		// As vSphere: a running VM is exported through a snapshot (ExportSnapshot).
		return fail(&types.InvalidPowerState{
			RequestedState: types.VirtualMachinePowerStatePoweredOff, ExistingState: state,
		}, "The attempted operation cannot be performed in the current state (%s).", state)
	}
	devices := vmDevices(vm)
	var disks []exportDisk
	for _, dev := range devices {
		disk, isDisk := dev.(*types.VirtualDisk)
		if !isDisk {
			continue
		}
		if rdm, isRDM := disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo); isRDM &&
			rdm.CompatibilityMode == string(types.VirtualDiskCompatibilityModePhysicalMode) {
			continue // a LUN, not a file
		}
		local, err := localPath(diskFileName(disk))
		if err != nil {
			return fail(&types.FileNotFound{FileFault: types.FileFault{File: diskFileName(disk)}}, "%v", err)
		}
		disks = append(disks, exportDisk{disk, leaseFile{flatPath(local), diskCapacity(disk)}})
	}
	lease := b.newLease(vmRef, devices, disks, scheme)
	return reply("ExportVmResponse", types.ExportVmResponse{Returnval: lease})
}

func (b *backupExt) exportSnapshot(snapRef types.ManagedObjectReference, scheme string) result {
	snap, ok := lookupSnapshot(snapRef)
	if !ok {
		return fail(&types.ManagedObjectNotFound{Obj: snapRef}, "The object %s has already been deleted", snapRef.Value)
	}
	devices, vmRef := snapshotDevices(snap)
	b.mu.Lock()
	frozen := b.frozen[snapRef]
	b.mu.Unlock()
	var disks []exportDisk
	for _, dev := range devices {
		disk, isDisk := dev.(*types.VirtualDisk)
		if !isDisk {
			continue
		}
		for _, f := range frozen {
			if f.dsPath == diskFileName(disk) {
				disks = append(disks, exportDisk{disk, leaseFile{f.flat, f.capacity}})
			}
		}
	}
	lease := b.newLease(vmRef, devices, disks, scheme)
	return reply("ExportSnapshotResponse", types.ExportSnapshotResponse{Returnval: lease})
}

func (b *backupExt) newLease(entity types.ManagedObjectReference, devices []types.BaseVirtualDevice, disks []exportDisk, scheme string) types.ManagedObjectReference {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	lease := &nfcLease{ext: b, id: id, files: make(map[string]leaseFile)}
	lease.Self = types.ManagedObjectReference{Type: "HttpNfcLease", Value: "backup-lease-" + id[:12]}
	info := &types.HttpNfcLeaseInfo{Lease: lease.Self, Entity: entity, LeaseTimeout: 300}
	for i, d := range disks {
		name := fmt.Sprintf("disk-%d.vmdk", i)
		lease.files[name] = d.file
		info.TotalDiskCapacityInKB += d.file.capacity / 1024
		info.DeviceUrl = append(info.DeviceUrl, types.HttpNfcLeaseDeviceUrl{
			Key:           deviceURLKey(entity, devices, d.disk),
			Url:           fmt.Sprintf("%s://*/nfc/%s/%s", scheme, id, name),
			SslThumbprint: b.thumbprint,
			Disk:          types.NewBool(true),
			TargetId:      name,
			FileSize:      d.file.capacity,
		})
	}
	lease.Info = info
	lease.State = types.HttpNfcLeaseStateReady
	lease.InitializeProgress = 100
	simulator.Map.Put(lease)
	b.mu.Lock()
	b.leases[id] = lease
	b.mu.Unlock()
	return lease.Self
}

// deviceURLKey names a disk the way vSphere's export deviceUrl keys do:
// "/<vm>/<controller type><bus>:<unit>", e.g. "/vm-42/VirtualLsiLogicController0:0".
func deviceURLKey(vm types.ManagedObjectReference, devices []types.BaseVirtualDevice, disk *types.VirtualDisk) string {
	unit := int32(0)
	if disk.UnitNumber != nil {
		unit = *disk.UnitNumber
	}
	for _, dev := range devices {
		if c, isController := dev.(types.BaseVirtualController); isController && dev.GetVirtualDevice().Key == disk.ControllerKey {
			kind := reflect.TypeOf(dev).Elem().Name()
			return fmt.Sprintf("/%s/%s%d:%d", vm.Value, kind, c.GetVirtualController().BusNumber, unit)
		}
	}
	return fmt.Sprintf("/%s/%d", vm.Value, disk.Key)
}

// serveLease serves GET/HEAD (with Range) of an open lease's disks; false: not one of ours.
func (b *backupExt) serveLease(w http.ResponseWriter, r *http.Request) bool {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/nfc/"), "/")
	if len(parts) != 2 {
		return false
	}
	b.mu.Lock()
	lease := b.leases[parts[0]]
	b.mu.Unlock()
	if lease == nil {
		return false
	}
	file, ok := lease.files[parts[1]]
	if !ok {
		http.NotFound(w, r)
		return true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "export leases are read-only", http.StatusMethodNotAllowed)
		return true
	}
	f, err := os.Open(file.path)
	if err != nil && !os.IsNotExist(err) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return true
	}
	if f != nil {
		defer f.Close()
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, parts[1], time.Time{}, io.NewSectionReader(paddedFile{f}, 0, file.capacity))
	return true
}

// paddedFile reads as zeros past the end of the file: a disk is as large as its capacity.
type paddedFile struct{ f *os.File }

func (p paddedFile) ReadAt(buf []byte, off int64) (int, error) {
	for start := 0; start < len(buf); start += blockSize {
		end := start + blockSize
		if end > len(buf) {
			end = len(buf)
		}
		if err := readPadded(p.f, buf[start:end], off+int64(start)); err != nil {
			return start, err
		}
	}
	return len(buf), nil
}
