"""The Imaging Document Consumer: finds a patient's imaging manifests (ITI-18), retrieves them (ITI-43)
and their images (RAD-69) from any vendor's actors over HTTP, and writes the images to files or imports
them into the local PACS.  It meets the other actors only through IHE transactions.
"""
