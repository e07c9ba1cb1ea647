package main

import (
	"fmt"
	"path"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Read-only helpers over the simulator's in-memory inventory (simulator.Map), each taking the
// object's lock while it reads.

func lookupVM(ref types.ManagedObjectReference) (*simulator.VirtualMachine, bool) {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	return vm, ok
}

func lookupSnapshot(ref types.ManagedObjectReference) (*simulator.VirtualMachineSnapshot, bool) {
	snap, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
	return snap, ok
}

// cbtEnabled reports config.changeTrackingEnabled of a VM (known is false for no such VM).
func cbtEnabled(ref types.ManagedObjectReference) (enabled bool, known bool) {
	vm, ok := lookupVM(ref)
	if !ok {
		return false, false
	}
	simulator.Map.WithLock(vm, func() {
		enabled = vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	})
	return enabled, true
}

func currentSnapshot(ref types.ManagedObjectReference) types.ManagedObjectReference {
	var cur types.ManagedObjectReference
	if vm, ok := lookupVM(ref); ok {
		simulator.Map.WithLock(vm, func() {
			if vm.Snapshot != nil && vm.Snapshot.CurrentSnapshot != nil {
				cur = *vm.Snapshot.CurrentSnapshot
			}
		})
	}
	return cur
}

func vmDevices(vm *simulator.VirtualMachine) []types.BaseVirtualDevice {
	var devices []types.BaseVirtualDevice
	simulator.Map.WithLock(vm, func() {
		devices = append(devices, vm.Config.Hardware.Device...)
	})
	return devices
}

func snapshotDevices(snap *simulator.VirtualMachineSnapshot) ([]types.BaseVirtualDevice, types.ManagedObjectReference) {
	var devices []types.BaseVirtualDevice
	var vm types.ManagedObjectReference
	simulator.Map.WithLock(snap, func() {
		devices = append(devices, snap.Config.Hardware.Device...)
		vm = snap.Vm
	})
	return devices, vm
}

// localPath maps "[datastore] dir/file.vmdk" to the file in the datastore's local directory
// (the simulator keeps datastores as plain directories and reports them in info.url).
func localPath(dsPath string) (string, error) {
	var p object.DatastorePath
	if !p.FromString(dsPath) {
		return "", fmt.Errorf("not a datastore path: %q", dsPath)
	}
	for _, entity := range simulator.Map.All("Datastore") {
		ds := entity.(*simulator.Datastore)
		var name, dir string
		simulator.Map.WithLock(ds, func() {
			name, dir = ds.Name, ds.Info.GetDatastoreInfo().Url
		})
		if name == p.Datastore {
			return path.Join(dir, p.Path), nil
		}
	}
	return "", fmt.Errorf("no datastore %q", p.Datastore)
}

// flatPath is the data file of a flat disk: disk.vmdk is its descriptor, disk-flat.vmdk its data.
func flatPath(descriptor string) string {
	return strings.TrimSuffix(descriptor, ".vmdk") + "-flat.vmdk"
}

func diskCapacity(disk *types.VirtualDisk) int64 {
	if disk.CapacityInBytes > 0 {
		return disk.CapacityInBytes
	}
	return disk.CapacityInKB * 1024
}

func diskFileName(disk *types.VirtualDisk) string {
	if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
		return b.GetVirtualDeviceFileBackingInfo().FileName
	}
	return ""
}

// attachedTo returns the VM, other than except, whose current configuration has a disk backed
// by dsPath (a hot-added snapshot disk, for instance).
func attachedTo(dsPath string, except types.ManagedObjectReference) (types.ManagedObjectReference, bool) {
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		if vm.Self == except {
			continue
		}
		for _, dev := range vmDevices(vm) {
			if disk, ok := dev.(*types.VirtualDisk); ok && diskFileName(disk) == dsPath {
				return vm.Self, true
			}
		}
	}
	return types.ManagedObjectReference{}, false
}
