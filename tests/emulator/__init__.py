"""Tests of the rehearsal Dataverse Web API emulator."""
