"""ITI-8 Patient Identity Feed: HL7 v2 ADT parsing and ACK (:mod:`.hl7v2`), the MLLP server
(:mod:`.mllp`) and the patient operations (:mod:`.patients`)."""
