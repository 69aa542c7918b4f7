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
    /* The head of the image at 1 MiB, for the bzImage (../bzimage.S wraps the image
       as its protected-mode code): +0 is the 32-bit boot protocol's entry, which the
       guest does not support (it halts); +0x200 the 64-bit entry, which is _start's. */
    .section .text.head, "ax"
    .code32
    bz_start32:
        cli
        hlt
        jmp bz_start32
        .org 0x200, 0x90
    .code64
    .global bz_start64
    bz_start64:
        jmp _start

    .section .text.entry, "ax"
    .code64
    .global _start
    _start:
        /* Record the machine state as the VMM left it (before cli/cld change RFLAGS):
           entry_state.rs reads testguest_entry_state. Our own stack first (pushfq). */
        mov %rsp, testguest_entry_state+{es_rsp}(%rip)
        lea __stack_top(%rip), %rsp
        pushfq
        popq testguest_entry_state+{es_rflags}(%rip)
        cli
        cld
        mov %rsi, %r12
        mov %cr0, %rax
        mov %rax, testguest_entry_state+{es_cr0}(%rip)
        mov %cr3, %rax
        mov %rax, testguest_entry_state+{es_cr3}(%rip)
        mov %cr4, %rax
        mov %rax, testguest_entry_state+{es_cr4}(%rip)
        mov $0xC0000080, %ecx
        rdmsr
        mov %eax, testguest_entry_state+{es_efer}(%rip)
        mov %edx, testguest_entry_state+{es_efer}+4(%rip)
        movw %cs, testguest_entry_state+{es_sel}(%rip)
        movw %ds, testguest_entry_state+{es_sel}+2(%rip)
        movw %es, testguest_entry_state+{es_sel}+4(%rip)
        movw %ss, testguest_entry_state+{es_sel}+6(%rip)
        movw %fs, testguest_entry_state+{es_sel}+8(%rip)
        movw %gs, testguest_entry_state+{es_sel}+10(%rip)
        str testguest_entry_state+{es_sel}+12(%rip)
        sgdt testguest_entry_state+{es_gdtr}(%rip)
        sidt testguest_entry_state+{es_idtr}(%rip)
        movb $1, testguest_entry_state+{es_valid}(%rip)
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
        .quad 0x00cf9a000000ffff
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

    /* Application processors (smp.rs). ap_tramp16 is copied to a page below 1 MiB
       whose number is the STARTUP IPI's vector: the AP starts there in real mode with
       CS = the page's segment, IP = 0. It loads the GDT above (its descriptor is part
       of the copy), turns on protection and jumps to ap_start32 in this image, which
       turns on long mode like _start32 and jumps to ap_start64: a stack of its own
       (slot from ap_next), then testguest_ap_main(slot). Linux's trampoline
       (realmode/rm/trampoline_64.S) takes the same steps. */
    .section .text.ap16, "ax"
    .code16
    .global ap_tramp16
    ap_tramp16:
        cli
        cld
        mov %cs, %ax
        mov %ax, %ds
        lgdtl ap_tramp16_gdt_desc - ap_tramp16
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x18, $ap_start32
        .balign 4
    ap_tramp16_gdt_desc:
        .word testguest_gdt_end - testguest_gdt - 1
        .long testguest_gdt
    .global ap_tramp16_end
    ap_tramp16_end:

    .section .text.ap32, "ax"
    .code32
    .global ap_start32
    ap_start32:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
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
        or $0x80000000, %eax
        mov %eax, %cr0
        ljmp $0x08, $ap_start64
    .global ap_start32_end
    ap_start32_end:

    .code64
    .text
    ap_start64:
        mov $1, %eax
        lock xaddl %eax, ap_next(%rip)
        cmp ${max_aps}, %eax
        jae 6f
        mov %eax, %edi
        lea 1(%rax), %rcx
        imul ${ap_stack}, %rcx
        lea ap_stacks(%rip), %rsp
        add %rcx, %rsp
        xor %ebp, %ebp
        call testguest_ap_main
    6:  cli
        hlt
        jmp 6b

    .section .data.ap_next, "aw"
    .balign 4
    .global ap_next
    ap_next:
        .long 0

    .section .noinit.ap_stacks, "aw", @nobits
    .balign 4096
    ap_stacks:
        .skip {ap_stacks_size}

    .section .noinit.stack, "aw", @nobits
    .balign 16
    __stack_bottom:
        .skip {stack_size}
    .global __stack_top
    __stack_top:

    .text
    "#,
    es_rflags = const crate::entry_state::OFF_RFLAGS,
    es_cr0 = const crate::entry_state::OFF_CR0,
    es_cr3 = const crate::entry_state::OFF_CR3,
    es_cr4 = const crate::entry_state::OFF_CR4,
    es_efer = const crate::entry_state::OFF_EFER,
    es_sel = const crate::entry_state::OFF_SELECTORS,
    es_gdtr = const crate::entry_state::OFF_GDTR,
    es_idtr = const crate::entry_state::OFF_IDTR,
    es_rsp = const crate::entry_state::OFF_RSP,
    es_valid = const crate::entry_state::OFF_VALID,
    max_aps = const crate::smp::MAX_APS,
    ap_stack = const crate::smp::AP_STACK_SIZE,
    ap_stacks_size = const crate::smp::AP_STACK_SIZE * crate::smp::MAX_APS as usize,
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
