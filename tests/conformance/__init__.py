"""The official ``handinger`` SDKs as conformance peers: driven against our emulator, their
own models must accept our responses, and what they see must equal what our client sees."""
