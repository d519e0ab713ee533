"""The web portal: a clinician's and an operator's view of the affinity domain (server-rendered pages).

A face, like the SOAP endpoints: it sits above the actors and works through them -- the clinician view is a
face of this site's Imaging Document Consumer (ITI-18, ITI-43, RAD-69), the operator view of its Imaging
Document Source -- and adds only what a browser needs: users who belong to a hospital, sessions, pages.
"""
