//! vmctl's KVM microVM engine: one VMM per VM, built from a [`VmmSpec`] in steps, then
//! run until the guest powers off, faults, or is told to stop.
//!
//! Boot steps, in order (each a method of [`Vmm`] or a function of its module):
//!
//! 1. check the memory size against the host (`memory::check_size`);
//! 2. open /dev/kvm, create the VM, set the TSS address;
//! 3. map guest memory and register it with KVM — before the irqchip, which is
//!    measurably slower to create otherwise;
//! 4. create the in-kernel irqchip (PIC, IO-APIC, LAPICs) and, only when asked, the PIT;
//! 5. attach the virtio disks and NICs ([`virtio_wiring`]): irqfds, transports on the
//!    MMIO bus, ioeventfds;
//! 6. load the kernel (ELF or bzImage), the command line (with a
//!    `virtio_mmio.device=` word per device appended) and the initrd;
//! 7. write the GDT, page tables, MP table and zero page;
//! 8. add devices: serial on COM1 (IRQ 4 through an irqfd), the i8042 (IRQ 1);
//! 9. create every vCPU and set up its CPUID, MSRs, registers, FPU and LAPIC;
//! 10. bind the control socket and the console socket ([`console`]); then
//!     [`Vmm::run`] starts one thread per vCPU, the virtio event loop and the socket
//!     threads, each confined to its seccomp filter ([`threads`], [`seccomp`]), and
//!     confines the main thread before the vCPUs enter the guest.

pub mod arch;
pub mod console;
pub mod console_log;
pub mod control;
pub mod devices;
pub mod dirty;
pub mod entry;
pub mod jail;
pub mod lifecycle;
pub mod lock;
pub mod memory;
pub mod probe;
pub mod process;
pub mod protocol;
pub mod seccomp;
pub mod snapshot;
pub mod spec;
pub mod threads;
pub mod vcpu;
pub mod virtio_wiring;

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::vmm::memory::GuestMemory;
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use arch::x86_64::boot_params::{self, BootInfo, BootParamsError};
use arch::x86_64::irqchip::{self, IrqchipError};
use arch::x86_64::layout::{self, KVM_TSS_ADDRESS};
use arch::x86_64::loader::{self, LoaderError};
use arch::x86_64::mptable::{self, MptableError};
use arch::x86_64::regs::{self, RegsError};
use console::{ConsoleError, ConsoleHub, ConsoleOut};
use control::{ControlError, Controller};
use devices::bus::{self, BusError, MmioBus, PioBus};
use devices::i8042::{I8042, I8042_DATA_PORT, I8042_LEN, KBD_IRQ};
use devices::serial::{SerialDevice, SerialOut, COM1_IRQ, COM1_LEN, COM1_PORT};
use devices::EventFdTrigger;
use lifecycle::{Lifecycle, LifecycleError, StopReason};
use memory::{HostLimits, MemoryError};
use seccomp::SeccompError;
use spec::SpecError;
pub use spec::VmmSpec;
use threads::{Gate, ThreadError, ThreadKind, Threads};
use vcpu::{Vcpu, VcpuConfig, VcpuError};
use virtio_wiring::{EventLoop, VirtioDevices, WiringError};

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Guest memory cannot be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// /dev/kvm cannot be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// A VM-level KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// A kernel or initrd file cannot be opened.
    #[error("cannot open {path}: {source}")]
    OpenImage {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Loading the kernel, command line or initrd failed.
    #[error(transparent)]
    Load(#[from] LoaderError),
    /// Writing boot tables failed.
    #[error(transparent)]
    Regs(#[from] RegsError),
    /// Writing the MP table failed.
    #[error(transparent)]
    Mptable(#[from] MptableError),
    /// Writing the zero page failed.
    #[error(transparent)]
    BootParams(#[from] BootParamsError),
    /// Setting up the in-kernel IO-APIC failed.
    #[error(transparent)]
    Irqchip(#[from] IrqchipError),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// Devices could not be placed on a bus.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A virtio disk or NIC could not be attached, or its event loop started.
    #[error(transparent)]
    Virtio(#[from] WiringError),
    /// A vCPU could not be set up.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The console socket could not be set up.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// A snapshot could not be restored.
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    /// The seccomp filters could not be compiled.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Signal handling could not be set up.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// A thread could not be started.
    #[error(transparent)]
    Thread(#[from] ThreadError),
    /// The guest faulted; the VM has stopped.
    #[error("guest fault on vCPU {vcpu}: {reason}")]
    GuestFault {
        /// The vCPU.
        vcpu: u32,
        /// What happened.
        reason: String,
    },
    /// vCPU threads did not stop.
    #[error("vCPU threads did not stop within {0:?}")]
    StopTimeout(Duration),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

/// How a VM ended without a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off.
    PowerOff,
    /// The VM was killed (control socket `kill`, or `shutdown` past its timeout).
    Killed,
}

/// Asks the VM to stop: what the i8042's reset line is wired to.
pub struct PowerOffTrigger(Arc<Lifecycle>);

impl Trigger for PowerOffTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request_stop(StopReason::PowerOff);
        Ok(())
    }
}

/// The i8042 as the VMM wires it.
pub type I8042Device = I8042<PowerOffTrigger, EventFdTrigger>;

/// A bound socket and its path.
type Socket = Option<(UnixListener, PathBuf)>;

/// The port I/O bus with COM1 and the i8042 on it, and those two devices.
type LegacyDevices = (
    Arc<PioBus>,
    Arc<Mutex<I8042Device>>,
    Arc<Mutex<SerialDevice>>,
);

/// What [`Vmm::run`] started: the vCPU threads, the event loop, the sockets served.
struct Started {
    vcpus: Vec<JoinHandle<()>>,
    event_loop: Option<EventLoop>,
    sockets: [Option<PathBuf>; 2],
}

/// A built VM, ready to [`run`](Vmm::run).
pub struct Vmm {
    // Field order is drop order: vCPUs and the VM go before the memory they map.
    vcpus: Vec<Vcpu>,
    i8042: Arc<Mutex<I8042Device>>,
    serial: Arc<Mutex<SerialDevice>>,
    console_hub: Arc<ConsoleHub>,
    virtio: VirtioDevices,
    control: Socket,
    console: Socket,
    life: Arc<Lifecycle>,
    threads: Threads,
    pit: bool,
    tsc_khz: u32,
    // Shared with the control thread, which saves snapshots.
    residency: Option<Arc<snapshot::memory::Residency>>,
    vm: Arc<VmFd>,
    _kvm: Kvm,
    mem: GuestMemory,
}

fn eventfd() -> Result<EventFd, VmmError> {
    EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd)
}

fn open(path: &std::path::Path) -> Result<File, VmmError> {
    File::open(path).map_err(|source| VmmError::OpenImage {
        path: path.to_path_buf(),
        source,
    })
}

impl Vmm {
    /// Builds the VM `spec` describes; guest serial output goes to `console` (and to
    /// a client of the console socket, when the spec has one). Every thread the VM
    /// starts is started by `threads`.
    pub fn build(spec: &VmmSpec, console: SerialOut, threads: Threads) -> Result<Self, VmmError> {
        spec.validate()?;
        let mem_size = spec.memory.0;
        memory::check_size(mem_size, HostLimits::current())?;
        let cpuid_mask = spec.cpuid_features()?;
        lifecycle::install_kick_handler()?;

        let (kvm, vm) = Self::create_vm()?;
        let mem = memory::create(mem_size)?;
        memory::register(&vm, &mem)?;
        Self::create_irqchip(&vm, spec.pit, spec.cpus)?;

        let mut mmio = MmioBus::new();
        let virtio = VirtioDevices::attach(&vm, &mem, &spec.devices, &mut mmio)?;
        let mmio = Arc::new(mmio);

        let entry = Self::load_guest(spec, &mem, &virtio.cmdline_words())?;

        let life = Arc::new(Lifecycle::new(spec.cpus, mem_size));
        let console_hub = Arc::new(ConsoleHub::new());
        let console = Box::new(ConsoleOut::new(console, console_hub.clone()));
        let (pio, i8042, serial) = Self::add_legacy_devices(&vm, &life, console, None)?;

        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let cfg = VcpuConfig {
            supported_cpuid: &supported_cpuid,
            cpuid_mask: &cpuid_mask,
            cpus: spec.cpus,
            entry,
            msrs: Self::msr_list(&kvm)?,
        };
        let vcpus = (0..spec.cpus)
            .map(|id| Vcpu::new(&vm, id, &cfg, pio.clone(), mmio.clone(), life.clone()))
            .collect::<Result<Vec<_>, _>>()?;

        let (control, console) = Self::bind_sockets(spec)?;
        let tsc_khz = vcpus.first().and_then(Vcpu::tsc_khz).unwrap_or(0);
        Ok(Self {
            tsc_khz,
            vcpus,
            i8042,
            serial,
            console_hub,
            virtio,
            control,
            console,
            life,
            threads,
            pit: spec.pit,
            residency: snapshot::memory::Residency::open().map(Arc::new),
            vm: Arc::new(vm),
            _kvm: kvm,
            mem,
        })
    }

    /// Opens /dev/kvm and creates the VM (with its TSS address).
    fn create_vm() -> Result<(Kvm, VmFd), VmmError> {
        let kvm = Kvm::new().map_err(VmmError::OpenKvm)?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        Ok((kvm, vm))
    }

    /// The in-kernel irqchip, and the PIT when asked. After guest memory is
    /// registered: the irqchip is measurably slower to create otherwise.
    fn create_irqchip(vm: &VmFd, pit: bool, cpus: u32) -> Result<(), VmmError> {
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        // The IO-APIC's ID register says what the MP table says (a restore then sets
        // the saved IO-APIC over it).
        irqchip::set_ioapic_id(vm, mptable::ioapic_id(cpus))?;
        if pit {
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        }
        Ok(())
    }

    /// The MSRs a snapshot saves: every one KVM lists.
    fn msr_list(kvm: &Kvm) -> Result<Arc<[u32]>, VmmError> {
        let list = kvm
            .get_msr_index_list()
            .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?;
        Ok(list.as_slice().into())
    }

    /// The control and console sockets, bound (served once the VM runs).
    fn bind_sockets(spec: &VmmSpec) -> Result<(Socket, Socket), VmmError> {
        let control = match &spec.control_socket {
            Some(path) => Some((control::bind(path)?, path.clone())),
            None => None,
        };
        let console = match spec.console_socket_path() {
            Some(path) => Some((console::bind(&path)?, path)),
            None => None,
        };
        Ok((control, console))
    }

    /// Loads kernel, command line (the spec's, then `devices_words`) and initrd;
    /// writes the boot tables. Returns the kernel's 64-bit entry.
    fn load_guest(spec: &VmmSpec, mem: &GuestMemory, devices_words: &str) -> Result<u64, VmmError> {
        let kernel = loader::load_kernel(mem, &mut open(&spec.kernel)?)?;
        let cmdline = match (spec.cmdline.trim_end(), devices_words) {
            (c, "") => c.to_string(),
            ("", d) => d.to_string(),
            (c, d) => format!("{c} {d}"),
        };
        let (cmdline_addr, cmdline_len) = loader::load_cmdline(mem, &cmdline)?;
        let initrd = match &spec.initrd {
            Some(path) => {
                let mut f = open(path)?;
                let size = f
                    .metadata()
                    .map_err(|source| VmmError::OpenImage {
                        path: path.clone(),
                        source,
                    })?
                    .len();
                let low_end = memory::low_ram_end(mem);
                Some(loader::load_initrd(mem, &mut f, size, &kernel, low_end)?)
            }
            None => None,
        };
        regs::write_boot_tables(mem)?;
        mptable::setup_mptable(mem, spec.cpus)?;
        let info = BootInfo {
            ram: layout::ram_ranges(spec.memory.0),
            cmdline_addr,
            cmdline_len,
            initrd,
            setup_header: kernel.setup_header,
        };
        boot_params::write_boot_params(mem, &info)?;
        Ok(kernel.entry)
    }

    /// COM1 and the i8042 on the port I/O bus, their IRQs through irqfds; in the
    /// state a snapshot saved, when restoring one.
    fn add_legacy_devices(
        vm: &VmFd,
        life: &Arc<Lifecycle>,
        console: SerialOut,
        saved: Option<&snapshot::DevicesState>,
    ) -> Result<LegacyDevices, VmmError> {
        let mut pio = PioBus::new();

        let com1_irq = eventfd()?;
        vm.register_irqfd(&com1_irq, COM1_IRQ)
            .map_err(kvm_err("KVM_IRQFD (COM1)"))?;
        let serial = match saved {
            None => SerialDevice::new(EventFdTrigger(com1_irq), console),
            Some(saved) => {
                SerialDevice::from_snapshot(EventFdTrigger(com1_irq), console, &saved.serial)
                    .ok_or_else(|| snapshot::SnapshotError::Device {
                        index: "serial".into(),
                        why: "its receive FIFO is longer than the UART's".into(),
                    })?
            }
        };
        let serial = Arc::new(Mutex::new(serial));
        pio.insert(COM1_PORT, COM1_LEN, serial.clone())?;

        let kbd_irq = eventfd()?;
        vm.register_irqfd(&kbd_irq, KBD_IRQ)
            .map_err(kvm_err("KVM_IRQFD (i8042)"))?;
        let mut i8042 = I8042::new(PowerOffTrigger(life.clone()), EventFdTrigger(kbd_irq));
        if let Some(saved) = saved {
            i8042
                .restore(&saved.i8042)
                .map_err(|e| snapshot::SnapshotError::Device {
                    index: "i8042".into(),
                    why: e.to_string(),
                })?;
        }
        let i8042 = Arc::new(Mutex::new(i8042));
        pio.insert(I8042_DATA_PORT, I8042_LEN, i8042.clone())?;
        Ok((Arc::new(pio), i8042, serial))
    }

    /// The VM's shared state (for tests and status).
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.life
    }

    /// Makes SIGTERM, SIGINT and SIGHUP kill the VM cleanly (control socket and pid
    /// file removed) instead of ending the process. Call before [`Vmm::run`], while the
    /// process has no other thread.
    pub fn stop_on_termination_signals(&self) -> Result<(), VmmError> {
        Ok(lifecycle::stop_on_termination_signals(
            self.life.clone(),
            &self.threads,
        )?)
    }

    /// Runs the VM: one thread per vCPU, the virtio event loop, the control and console
    /// sockets each on their own, until the guest powers off, faults, or is stopped.
    /// Every thread is confined to its kind before a vCPU enters the guest (this one
    /// last: see [`threads`]). Returns once every vCPU thread has ended, after removing
    /// the sockets.
    pub fn run(mut self) -> Result<Exit, VmmError> {
        let gate = Arc::new(Gate::default());
        let started = self.start_threads(&gate);
        gate.open(started.is_ok());
        let Started {
            vcpus: threads,
            event_loop,
            sockets,
        } = match started {
            Ok(started) => started,
            Err(e) => {
                // The vCPUs end at the gate; the other threads end with the process.
                self.life.request_stop(StopReason::Killed);
                return Err(e);
            }
        };

        self.life.wait_stopped(None);
        const STOP_TIMEOUT: Duration = Duration::from_secs(10);
        let all_exited = self.life.kick_until_exited(STOP_TIMEOUT);
        if all_exited {
            for t in threads {
                let _ = t.join();
            }
        }
        self.life.drain_requests(Duration::from_secs(2));
        if let Some(l) = event_loop {
            l.stop();
        }
        self.console_hub.close();
        for path in sockets.into_iter().flatten() {
            let _ = std::fs::remove_file(path);
        }
        if !all_exited {
            return Err(VmmError::StopTimeout(STOP_TIMEOUT));
        }
        match self.life.stop_reason() {
            Some(StopReason::Fault { vcpu, reason }) => Err(VmmError::GuestFault { vcpu, reason }),
            Some(StopReason::Killed) => Ok(Exit::Killed),
            Some(StopReason::PowerOff) | None => Ok(Exit::PowerOff),
        }
    }

    /// Starts every thread — the vCPUs waiting at `gate` — then confines this one.
    fn start_threads(&mut self, gate: &Arc<Gate>) -> Result<Started, VmmError> {
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for vcpu in self.vcpus.drain(..) {
            let name = format!("vcpu{}", vcpu.id());
            let gate = gate.clone();
            vcpus.push(self.threads.spawn(ThreadKind::Vcpu, &name, move || {
                if gate.wait() {
                    vcpu.run();
                }
            })?);
        }
        let event_loop = self.virtio.start(&self.threads)?;
        let control = self.start_control()?;
        let console = self.start_console()?;
        self.threads.confine_main()?;
        Ok(Started {
            vcpus,
            event_loop,
            sockets: [control, console],
        })
    }

    fn start_control(&mut self) -> Result<Option<PathBuf>, VmmError> {
        let Some((listener, path)) = self.control.take() else {
            return Ok(None);
        };
        let i8042 = self.i8042.clone();
        let devices = self.virtio.status_source();
        let hub = self.console_hub.clone();
        let snapshotter = snapshot::save::Snapshotter {
            life: self.life.clone(),
            vm: self.vm.clone(),
            mem: self.mem.clone(),
            pit: self.pit,
            tsc_khz: self.tsc_khz,
            serial: self.serial.clone(),
            i8042: self.i8042.clone(),
            virtio: self.virtio.transports(),
            residency: self.residency.clone(),
            dirty: Default::default(),
            disk_writes: self.virtio.disk_writes(),
        };
        let ctl = Controller::new(
            self.life.clone(),
            Box::new(move || {
                bus::lock(&i8042)
                    .inject_ctrl_alt_del()
                    .map_err(|e| e.to_string())
            }),
        )
        .with_devices(Box::new(move || devices.status()))
        .with_console(Box::new(move || hub.status()))
        .with_snapshots(snapshotter);
        control::serve(listener, Arc::new(ctl), &self.threads)?;
        Ok(Some(path))
    }

    /// Serves the console socket, if the spec has one. Returns its path.
    fn start_console(&mut self) -> Result<Option<PathBuf>, VmmError> {
        let Some((listener, path)) = self.console.take() else {
            return Ok(None);
        };
        console::serve(
            listener,
            self.console_hub.clone(),
            self.serial.clone(),
            &self.threads,
        )?;
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests;
