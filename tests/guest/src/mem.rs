//! memcpy, memmove, memset, memcmp and bcmp: the compiler emits calls to them and
//! there is no libc. Written in assembly so they cannot be compiled back into calls
//! to themselves, and use no SSE.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.memcpy, "ax"
    .global memcpy
    memcpy:
        mov %rdi, %rax
        mov %rdx, %rcx
        rep movsb
        ret

    .section .text.memmove, "ax"
    .global memmove
    memmove:
        mov %rdi, %rax
        mov %rdx, %rcx
        cmp %rsi, %rdi
        jbe 2f
        lea -1(%rsi,%rdx), %rsi
        lea -1(%rdi,%rdx), %rdi
        std
        rep movsb
        cld
        ret
    2:  rep movsb
        ret

    .section .text.memset, "ax"
    .global memset
    memset:
        mov %rdi, %r9
        mov %esi, %eax
        mov %rdx, %rcx
        rep stosb
        mov %r9, %rax
        ret

    .section .text.memcmp, "ax"
    .global memcmp
    .global bcmp
    memcmp:
    bcmp:
        xor %eax, %eax
        test %rdx, %rdx
        jz 3f
    2:  movzbl (%rdi), %eax
        movzbl (%rsi), %ecx
        sub %ecx, %eax
        jnz 3f
        inc %rdi
        inc %rsi
        dec %rdx
        jnz 2b
    3:  ret

    .text
    "#,
    options(att_syntax)
);
