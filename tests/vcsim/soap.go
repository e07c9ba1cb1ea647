package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// SOAP plumbing for the methods the extension answers itself: decoding a request with
// govmomi's types, writing a response or a vSphere fault the way pyvmomi expects them, and
// asking the simulator whether the caller's session cookie is valid.

const vimNamespace = "urn:vim25"

type soapEnvelope struct {
	XMLName xml.Name `xml:"soapenv:Envelope"`
	Env     string   `xml:"xmlns:soapenv,attr"`
	XSD     string   `xml:"xmlns:xsd,attr"`
	XSI     string   `xml:"xmlns:xsi,attr"`
	Body    soapBody `xml:"soapenv:Body"`
}

type soapBody struct {
	Content xml.Marshaler
}

// methodResponse encodes e.g. types.QueryChangedDiskAreasResponse as
// <QueryChangedDiskAreasResponse xmlns="urn:vim25">...</...>.
type methodResponse struct {
	name  string
	value interface{}
}

func (m methodResponse) MarshalXML(e *xml.Encoder, _ xml.StartElement) error {
	return e.EncodeElement(m.value, xml.StartElement{Name: xml.Name{Space: vimNamespace, Local: m.name}})
}

// soapFault encodes a vSphere MethodFault: the detail element is named <Kind>Fault and carries
// xsi:type, which is how pyvmomi finds the fault class to raise.
type soapFault struct {
	message string
	fault   types.BaseMethodFault
}

func (f soapFault) MarshalXML(e *xml.Encoder, _ xml.StartElement) error {
	kind := reflect.TypeOf(f.fault).Elem().Name()
	start := xml.StartElement{Name: xml.Name{Local: "soapenv:Fault"}}
	if err := e.EncodeToken(start); err != nil {
		return err
	}
	if err := e.EncodeElement("ServerFaultCode", xml.StartElement{Name: xml.Name{Local: "faultcode"}}); err != nil {
		return err
	}
	if err := e.EncodeElement(f.message, xml.StartElement{Name: xml.Name{Local: "faultstring"}}); err != nil {
		return err
	}
	detail := xml.StartElement{Name: xml.Name{Local: "detail"}}
	if err := e.EncodeToken(detail); err != nil {
		return err
	}
	faultStart := xml.StartElement{
		Name: xml.Name{Space: vimNamespace, Local: kind + "Fault"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "xsi:type"}, Value: kind}},
	}
	if err := e.EncodeElement(f.fault, faultStart); err != nil {
		return err
	}
	if err := e.EncodeToken(detail.End()); err != nil {
		return err
	}
	return e.EncodeToken(start.End())
}

func writeSOAP(w http.ResponseWriter, status int, content xml.Marshaler) {
	var out bytes.Buffer
	out.WriteString(xml.Header)
	err := xml.NewEncoder(&out).Encode(soapEnvelope{
		Env:  "http://schemas.xmlsoap.org/soap/envelope/",
		XSD:  "http://www.w3.org/2001/XMLSchema",
		XSI:  "http://www.w3.org/2001/XMLSchema-instance",
		Body: soapBody{Content: content},
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(out.Bytes())
}

func (b soapBody) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	if err := e.EncodeToken(start); err != nil {
		return err
	}
	if err := b.Content.MarshalXML(e, xml.StartElement{}); err != nil {
		return err
	}
	return e.EncodeToken(start.End())
}

// result is what an extension method returns: a response value or a fault.
type result struct {
	name  string // e.g. "QueryChangedDiskAreasResponse"
	value interface{}
	fault *soapFault
}

func reply(name string, value interface{}) result { return result{name: name, value: value} }

func fail(fault types.BaseMethodFault, format string, args ...interface{}) result {
	return result{fault: &soapFault{message: fmt.Sprintf(format, args...), fault: fault}}
}

func invalidArgument(property string) result {
	return fail(&types.InvalidArgument{InvalidProperty: property},
		"A specified parameter was not correct: %s", property)
}

func (r result) write(w http.ResponseWriter) {
	if r.fault != nil {
		writeSOAP(w, http.StatusInternalServerError, r.fault)
		return
	}
	writeSOAP(w, http.StatusOK, methodResponse{name: r.name, value: r.value})
}

func decodeRequest(body []byte) (*simulator.Method, error) {
	return simulator.UnmarshalBody(types.TypeFunc(), body)
}

// replay sends a request with the given body to the simulator and records its answer.
func replay(inner http.Handler, r *http.Request, body []byte) *httptest.ResponseRecorder {
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	rec := httptest.NewRecorder()
	inner.ServeHTTP(rec, req)
	return rec
}

func forward(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

const currentTimeRequest = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>` +
	`<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>` +
	`</soapenv:Body></soapenv:Envelope>`

// validSession asks the simulator itself: CurrentTime needs a logged-in session.
func validSession(inner http.Handler, r *http.Request) bool {
	if _, err := r.Cookie("vmware_soap_session"); err != nil {
		return false
	}
	probe, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "/sdk", strings.NewReader(currentTimeRequest))
	if err != nil {
		return false
	}
	probe.Header.Set("Cookie", r.Header.Get("Cookie"))
	probe.Header.Set("Content-Type", "text/xml")
	rec := httptest.NewRecorder()
	inner.ServeHTTP(rec, probe)
	return rec.Code == http.StatusOK
}

var returnvalRef = regexp.MustCompile(`<returnval type="([A-Za-z]+)">([^<]+)</returnval>`)

// returnedRef extracts the moref a simulator response returned (e.g. the Task of a *_Task call).
func returnedRef(rec *httptest.ResponseRecorder) (types.ManagedObjectReference, bool) {
	m := returnvalRef.FindSubmatch(rec.Body.Bytes())
	if rec.Code != http.StatusOK || m == nil {
		return types.ManagedObjectReference{}, false
	}
	return types.ManagedObjectReference{Type: string(m[1]), Value: string(m[2])}, true
}
