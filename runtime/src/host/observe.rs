//! Assembling what the host modules observe into one inventory. (Filled in below.)
