/* The test guest as a bzImage: the real-mode part (boot sector + setup sectors) with a
 * setup header of boot protocol 2.15 as Linux's arch/x86/boot/header.S lays it out,
 * then the guest's image at 1 MiB as the protected-mode part (PAYLOAD, the ELF's
 * loadable bytes from objcopy -O binary). Its 64-bit entry is at load address + 0x200
 * (entry.rs .text.head). Assembled by ./build with --defsym SYSSIZE=<payload / 16,
 * rounded up> and INIT_SIZE=<the image's memory size, .bss and stacks included>.
 * Only the 64-bit boot protocol is supported: the 16-bit and 32-bit entries halt.
 * The values are checked by the guest (src/setup_header.rs): keep them in step. */

    .set SETUP_SECTS, 4
    .set LOAD_ADDRESS, 0x100000

    .code16
    .section .bz, "a"
bootsect:
    cli
    hlt
    jmp bootsect

    .org 0x1f1
setup_sects:        .byte SETUP_SECTS
root_flags:         .word 0
syssize:            .long SYSSIZE
ram_size:           .word 0
vid_mode:           .word 0xffff            /* NORMAL_VGA */
root_dev:           .word 0
boot_flag:          .word 0xaa55
    /* 0x200: the 16-bit setup entry, a short jump over the header. */
jump:               .byte 0xeb
                    .byte setup_code - header
header:             .ascii "HdrS"
version:            .word 0x020f
realmode_swtch:     .long 0
start_sys_seg:      .word 0x1000
kernel_version:     .word kernel_version_string - jump
type_of_loader:     .byte 0
loadflags:          .byte 0x01              /* LOADED_HIGH */
setup_move_size:    .word 0x8000
code32_start:       .long LOAD_ADDRESS
ramdisk_image:      .long 0
ramdisk_size:       .long 0
bootsect_kludge:    .long 0
heap_end_ptr:       .word 0
ext_loader_ver:     .byte 0
ext_loader_type:    .byte 0
cmd_line_ptr:       .long 0
initrd_addr_max:    .long 0x7fffffff
kernel_alignment:   .long 0x200000
relocatable_kernel: .byte 0
min_alignment:      .byte 21
xloadflags:         .word 0x0001            /* XLF_KERNEL_64 */
cmdline_size:       .long 2047
hardware_subarch:   .long 0
hardware_subarch_data: .quad 0
payload_offset:     .long 0
payload_length:     .long 0
setup_data:         .quad 0
pref_address:       .quad LOAD_ADDRESS
init_size:          .long INIT_SIZE
handover_offset:    .long 0
kernel_info_offset: .long 0
setup_code:
    cli
    hlt
    jmp setup_code
kernel_version_string:
    .asciz "vmctl testguest"

    .org (SETUP_SECTS + 1) * 512
    .incbin "PAYLOAD_FILE"
