from django.db import models


class ConnectionKind(models.TextChoices):
    VCENTER = "vcenter", "VMware vCenter"
    ESXI = "esxi", "VMware ESXi"
    HYPERV = "hyperv", "Microsoft Hyper-V"
    XEN_POOL = "xenpool", "XenServer / XCP-ng pool"
    KVM = "kvm", "KVM / libvirt host"


# Where each kind listens when the user gives no port.
DEFAULT_PORTS = {
    ConnectionKind.VCENTER: 443,
    ConnectionKind.ESXI: 443,
    ConnectionKind.HYPERV: 5986,  # WinRM over HTTPS
    ConnectionKind.XEN_POOL: 443,
    ConnectionKind.KVM: 22,  # qemu+ssh://
}

# Kinds whose management endpoint speaks TLS, so a certificate fingerprint can be pinned.
TLS_KINDS = frozenset(
    {ConnectionKind.VCENTER, ConnectionKind.ESXI, ConnectionKind.HYPERV, ConnectionKind.XEN_POOL}
)


class ObjectKind(models.TextChoices):
    DATACENTER = "datacenter", "Datacenter"
    CLUSTER = "cluster", "Cluster"
    POOL = "pool", "Pool"
    HOST = "host", "Host"
    FOLDER = "folder", "Folder"
    DATASTORE = "datastore", "Datastore / storage repository"


class PowerState(models.TextChoices):
    ON = "on", "Powered on"
    OFF = "off", "Powered off"
    SUSPENDED = "suspended", "Suspended"
    UNKNOWN = "unknown", "Unknown"


class DiskMode(models.TextChoices):
    PERSISTENT = "persistent", "Persistent"
    INDEPENDENT_PERSISTENT = "independent_persistent", "Independent persistent"
    INDEPENDENT_NONPERSISTENT = "independent_nonpersistent", "Independent non-persistent"
    RDM_VIRTUAL = "rdm_virtual", "RDM (virtual compatibility)"
    RDM_PHYSICAL = "rdm_physical", "RDM (physical compatibility)"
    PASSTHROUGH = "passthrough", "Pass-through disk"


# Disks that a hypervisor snapshot does not capture, with the reason shown to the user.
EXCLUDED_DISK_MODES = {
    DiskMode.INDEPENDENT_PERSISTENT: "Independent disks are not included in VM snapshots.",
    DiskMode.INDEPENDENT_NONPERSISTENT: "Independent disks are not included in VM snapshots.",
    DiskMode.RDM_PHYSICAL: (
        "Physical-mode RDM disks cannot be snapshotted by the hypervisor; protect them with an "
        "in-guest agent."
    ),
    DiskMode.PASSTHROUGH: (
        "Pass-through disks bypass the hypervisor's snapshot; protect them with an in-guest agent."
    ),
}


class Transport(models.TextChoices):
    HOTADD = "hotadd", "HotAdd"
    SAN = "san", "SAN"
    NBDSSL = "nbdssl", "NBDSSL"
    NBD = "nbd", "NBD"
    LOCAL = "local", "Local (proxy on the host)"
