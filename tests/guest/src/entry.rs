//! Entry stubs, the PVH note and the stack.
//!
//! Two ways in, both ending in `testguest_main(info, mode)`:
//! - `_start` (the ELF entry): the Linux 64-bit boot protocol, as a VMM enters a
//!   vmlinux. Long mode, paging on with an identity map set up by the VMM (covering at
//!   least the guest's image at 1 MiB), `rsi` = physical address of the boot params
//!   (zero page). It switches to its own page tables (below) at once.
//! - `_start32` (the PVH note, XEN_ELFNOTE_PHYS32_ENTRY): 32-bit protected mode,
//!   paging off, `ebx` = physical address of `hvm_start_info`. It enables long mode with
//!   its own static page tables and its own GDT. QEMU's `-M microvm -kernel` enters
//!   this way.
//!
//! Both load the same static page tables: an identity map of the first 4 GiB in 2 MiB
//! pages (the virtio-mmio devices live in the 32-bit MMIO hole, 0xc0000000-0xffffffff,
//! which is mapped uncached).
//!
//! Neither relies on the loader's stack; both zero .bss (normally empty) themselves.

use core::arch::global_asm;

/// `mode` argument of `testguest_main`: entered through the Linux 64-bit entry.
pub const MODE_LINUX64: u64 = 0;
/// `mode` argument of `testguest_main`: entered through the PVH 32-bit entry.
pub const MODE_PVH: u64 = 1;

/// Size of the guest's stack, in .noinit (not zeroed, not in the ELF file).
pub const STACK_SIZE: usize = 16 * 1024;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .code64
    .global _start
    _start:
        cli
        cld
        mov %rsi, %r12
        lea __bss_start(%rip), %rdi
        lea __bss_end(%rip), %rcx
        sub %rdi, %rcx
        xor %eax, %eax
        rep stosb
        lea testguest_pml4(%rip), %rax
        mov %rax, %cr3
        lea __stack_top(%rip), %rsp
        xor %ebp, %ebp
        mov %r12, %rdi
        mov ${linux64}, %esi
        call testguest_main
    2:  cli
        hlt
        jmp 2b

    .code32
    .global _start32
    _start32:
        cli
        cld
        mov %ebx, %esi
        mov $__bss_start, %edi
        mov $__bss_end, %ecx
        sub %edi, %ecx
        xor %eax, %eax
        rep stosb
        /* PAE on, then the page tables, then EFER.LME, then paging. */
        mov %cr4, %eax
        or $0x20, %eax
        mov %eax, %cr4
        mov $testguest_pml4, %eax
        mov %eax, %cr3
        mov $0xC0000080, %ecx
        rdmsr
        or $0x100, %eax
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax
        mov %eax, %cr0
        lgdt testguest_gdt_desc
        ljmp $0x08, $_start32_long

    .code64
    _start32_long:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        lea __stack_top(%rip), %rsp
        xor %ebp, %ebp
        mov %esi, %edi
        mov ${pvh}, %esi
        call testguest_main
    4:  cli
        hlt
        jmp 4b

    /* PVH entry note: name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), the 32-bit
       entry's physical address (8 bytes; readers take the low 32 bits or all 64). */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad _start32
    .balign 4

    /* GDT for the PVH path (written by the CPU's accessed bit: keep it in .data). */
    .section .data.testguest_gdt, "aw"
    .balign 16
    testguest_gdt:
        .quad 0
        .quad 0x00af9a000000ffff
        .quad 0x00cf92000000ffff
    testguest_gdt_end:
    .balign 4
    testguest_gdt_desc:
        .word testguest_gdt_end - testguest_gdt - 1
        .long testguest_gdt

    /* Static identity page tables for both paths: the first 4 GiB in 2 MiB pages, so
       that the virtio-mmio devices in the 32-bit MMIO hole are reachable. The last GiB
       (0xc0000000-0xffffffff: MMIO hole, no RAM) is mapped uncached (PCD|PWT). */
    .section .data.testguest_pt, "aw"
    .balign 4096
    testguest_pml4:
        .quad testguest_pdpt + 0x3
        .fill 511, 8, 0
    testguest_pdpt:
        .quad testguest_pd + 0x3
        .quad testguest_pd + 0x1000 + 0x3
        .quad testguest_pd + 0x2000 + 0x3
        .quad testguest_pd + 0x3000 + 0x3
        .fill 508, 8, 0
    testguest_pd:
        .set testguest_pd_addr, 0
        .rept 1536
        .quad testguest_pd_addr + 0x83
        .set testguest_pd_addr, testguest_pd_addr + 0x200000
        .endr
        .rept 512
        .quad testguest_pd_addr + 0x9b
        .set testguest_pd_addr, testguest_pd_addr + 0x200000
        .endr

    .section .noinit.stack, "aw", @nobits
    .balign 16
    __stack_bottom:
        .skip {stack_size}
    .global __stack_top
    __stack_top:

    .text
    "#,
    linux64 = const MODE_LINUX64,
    pvh = const MODE_PVH,
    stack_size = const STACK_SIZE,
    options(att_syntax)
);

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Physical address range `[start, end)` the guest's image occupies (code, data,
/// stack), as linked by link.ld.
#[allow(unused_unsafe)] // taking the address of an extern static is safe in newer Rust
pub fn image_range() -> (u64, u64) {
    // SAFETY: only the addresses of linker-defined symbols are taken.
    unsafe {
        (
            core::ptr::addr_of!(__image_start) as u64,
            core::ptr::addr_of!(__image_end) as u64,
        )
    }
}
