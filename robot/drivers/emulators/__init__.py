"""Byte-level servo-bus emulators on a pseudo-terminal: the other end of the serial port a
hardware driver opens speaks the servos' wire protocol, so the maker's real SDK is tested (and
benchmarked) without an arm. ``sts``: Feetech STS/SMS servos (STS3215, SO-100/SO-101);
``dynamixel``: DYNAMIXEL X-series servos (Protocol 2.0). Each can inject faults: a servo that
stops answering, a corrupt reply, an error status, a port that vanishes.

``python -m tether.robot.drivers.emulators sts --ids 1 2 3 4 5 6`` runs one and prints its port.
"""
